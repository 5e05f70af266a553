/**
 * A cluster with a tablespace: the base backup stores one archive per tablespace, and a restore
 * puts the tablespace where --tablespace-map says, refusing a non-empty data directory first.
 */
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PgCluster, startCluster, startExistingCluster } from '../../support/pg-cluster.ts';
import {
  archiveSettings,
  type Harness,
  makeHarness,
  switchAndWaitArchived,
  waitPromoted,
} from '../wal/harness.ts';

let h: Harness;
let primary: PgCluster;
let restored: PgCluster | undefined;

beforeAll(async () => {
  h = await makeHarness('tblspc');
  primary = await startCluster({ settings: archiveSettings(h) });
});

afterAll(async () => {
  await restored?.destroy().catch(() => {});
  await primary?.destroy();
  await rm(h.dir, { recursive: true, force: true });
});

describe('base backup with a tablespace', () => {
  it('backs up each tablespace as its own archive and restores it to a mapped location', async () => {
    const location = join(h.dir, 'ts-original');
    await mkdir(location, { mode: 0o700 });
    if (h.user) await chown(location, h.user.uid, h.user.gid);
    await primary.sql(`create tablespace extra location '${location}'`);
    await primary.sql(
      'create table in_extra tablespace extra as select g, md5(g::text) as m from generate_series(1, 5000) g',
    );
    const oid = await primary.sql("select oid from pg_tablespace where spcname = 'extra'");

    const backup = await h.pgkeep(['basebackup', '--json'], primary.env);
    expect(backup).toMatchObject({ code: 0, stderr: '' });
    const manifest = JSON.parse(backup.stdout);
    expect(
      manifest.objects.map((o: { role: string; tablespaceOid?: number }) => [o.role, o.tablespaceOid]),
    ).toEqual([
      ['base', undefined],
      ['tablespace', Number(oid)],
    ]);
    await primary.sql('insert into in_extra select g, md5(g::text) from generate_series(5001, 6000) g');
    await switchAndWaitArchived(primary);
    const expected = await primary.sql("select count(*), md5(string_agg(m, '' order by g)) from in_extra");

    const pgdata = join(h.dir, 'restored', 'data');
    const mapped = join(h.dir, 'ts-restored');
    await mkdir(pgdata, { recursive: true });
    await writeFile(join(pgdata, 'PG_VERSION'), '15\n');
    if (h.user) {
      await chown(join(h.dir, 'restored'), h.user.uid, h.user.gid);
      await chown(pgdata, h.user.uid, h.user.gid);
    }
    const refused = await h.pgkeep(['restore', '--pgdata', pgdata, '--tablespace-map', `${oid}=${mapped}`]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/not empty.*--overwrite/);

    const result = await h.pgkeep([
      'restore',
      '--pgdata',
      pgdata,
      '--overwrite',
      '--tablespace-map',
      `${oid}=${mapped}`,
    ]);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    restored = await startExistingCluster(pgdata, { settings: { archive_mode: 'off' } });
    await waitPromoted(restored);
    expect(await restored.sql("select count(*), md5(string_agg(m, '' order by g)) from in_extra")).toBe(
      expected,
    );
    expect(await restored.sql(`select pg_tablespace_location(${oid})`)).toBe(mapped);
  });
});
