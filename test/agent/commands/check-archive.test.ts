/**
 * `pgkeep check --archive` walks a real archive: one WAL object deleted from its middle is
 * reported as a gap naming the missing segment, as text and as JSON, and the check fails.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walFilePrefix } from '../../../core/keys.ts';
import { type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { archiveSettings, type Harness, makeHarness, switchAndWaitArchived } from '../wal/harness.ts';

let h: Harness;
let primary: PgCluster | undefined;

beforeAll(async () => {
  h = await makeHarness('gaps');
  primary = await startCluster({ settings: archiveSettings(h) });
});

afterAll(async () => {
  await primary?.destroy().catch(() => {});
  if (h) await rm(h.dir, { recursive: true, force: true });
});

type Check = { name: string; ok: boolean; detail: string };

describe('check --archive', () => {
  it('reports a WAL object missing from the middle of the archive, naming the segment', async () => {
    const pg = primary as PgCluster;
    await pg.sql('create table t (v int)');
    expect((await h.pgkeep(['basebackup'], pg.env)).code).toBe(0);
    const archived: string[] = [];
    for (let i = 0; i < 3; i++) {
      await pg.sql(`insert into t values (${i})`);
      archived.push(await switchAndWaitArchived(pg));
    }
    const clean = await h.pgkeep(['check', '--json', '--archive'], pg.env);
    const cleanChecks = JSON.parse(clean.stdout) as Check[];
    expect(cleanChecks.find((c) => c.name === 'archive gaps, timeline 1')).toMatchObject({ ok: true });

    const missing = archived[1] as string;
    const dir = join(h.repoDir, walFilePrefix('gaps', missing)).replace(/\/[^/]*$/, '');
    const [file] = (await readdir(dir)).filter((f) => f.startsWith(`${missing}-`));
    expect(file).toBeDefined();
    await rm(join(dir, file as string));

    const json = await h.pgkeep(['check', '--json', '--archive'], pg.env);
    expect(json.code).toBe(1);
    const gap = (JSON.parse(json.stdout) as Check[]).find((c) => c.name === 'archive gaps, timeline 1');
    expect(gap?.ok).toBe(false);
    expect(gap?.detail).toContain(`${missing} missing`);
    const text = await h.pgkeep(['check', '--archive'], pg.env);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(
      new RegExp(`FAIL {2}archive gaps, timeline 1: 1 gap\\(s\\) .*${missing} missing`),
    );
  });
});
