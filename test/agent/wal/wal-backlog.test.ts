import { readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { walFilePrefix, walGapKey } from '../../../core/keys.ts';
import { type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import {
  archiveSettings,
  type Harness,
  makeHarness,
  switchAndWaitArchived,
  waitArchived,
} from './harness.ts';

const MIB = 1024 * 1024;
const harnesses: Harness[] = [];
const clusters: PgCluster[] = [];

afterAll(async () => {
  for (const c of clusters) await c.destroy().catch(() => {});
  for (const h of harnesses) await rm(h.dir, { recursive: true, force: true });
});

async function setUpCluster(name: string, onBacklogFull: 'fail' | 'drop') {
  // 40 MiB: three ready 16 MiB segments are past it, two are not; the warning from 20 MiB.
  const h = await makeHarness(name, { wal: { retrySeconds: 1, maxBacklogBytes: 40 * MIB, onBacklogFull } });
  harnesses.push(h);
  const pg = await startCluster({ settings: archiveSettings(h) });
  clusters.push(pg);
  await pg.sql('create table t (v int)');
  expect((await h.pgkeep(['basebackup'], pg.env)).code).toBe(0);
  // Everything so far archived (the backup history file too): the backlog starts empty.
  await pg.sql('insert into t values (0)');
  await switchAndWaitArchived(pg);
  expect(await ready(pg)).toEqual([]);
  return { h, pg };
}

/** Finishes `count` segments while the repository is down; their names, oldest first. */
async function segmentsWhileDown(pg: PgCluster, count: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    await pg.sql(`insert into t values (${i})`);
    names.push(await pg.sql('select pg_walfile_name(pg_switch_wal())'));
  }
  return names;
}

async function ready(pg: PgCluster): Promise<string[]> {
  return (await readdir(join(pg.dataDir, 'pg_wal', 'archive_status')))
    .filter((f) => f.endsWith('.ready'))
    .map((f) => f.slice(0, -'.ready'.length))
    .sort();
}

describe('WAL backlog at wal.maxBacklogBytes', () => {
  it('fail (default): archive_command keeps failing, naming the backlog and the setting; nothing is lost', async () => {
    const { h, pg } = await setUpCluster('backlogfail', 'fail');
    await rename(h.repoDir, `${h.repoDir}.down`);
    let names: string[];
    try {
      names = await segmentsWhileDown(pg, 4);
      const oldest = (await ready(pg))[0] as string;
      expect(oldest).toBe(names[0]);
      const push = await h.pgkeep(['wal-push', `pg_wal/${oldest}`], {}, pg.dataDir);
      expect(push.code).toBe(4);
      expect(push.stderr).toMatch(/WARNING: \d+\.\d MiB of WAL waits to be archived/);
      expect(push.stderr).toMatch(
        /the WAL backlog 64\.0 MiB is at wal\.maxBacklogBytes \(40\.0 MiB\) and wal\.onBacklogFull is fail/,
      );
      expect(await ready(pg)).toEqual(names);
    } finally {
      await rename(`${h.repoDir}.down`, h.repoDir);
    }
    await pg.sql('insert into t values (99)');
    const next = await pg.sql('select pg_walfile_name(pg_switch_wal())');
    await waitArchived(pg, next, 120_000);
    for (const name of names) {
      expect(await readdir(join(h.repoDir, walFilePrefix(h.cluster, name), '..'))).toEqual(
        expect.arrayContaining([expect.stringMatching(new RegExp(`^${name}-`))]),
      );
    }
  });

  it('drop: the oldest segments are given up, the gap is recorded, and a restore across it is refused', async () => {
    const { h, pg } = await setUpCluster('backlogdrop', 'drop');
    await rename(h.repoDir, `${h.repoDir}.down`);
    let names: string[];
    try {
      names = await segmentsWhileDown(pg, 4);
      // PostgreSQL's own archive_command drops the two oldest (64 and 48 MiB waiting), then fails.
      await waitArchived(pg, names[1] as string, 120_000);
      expect(await ready(pg)).toEqual(names.slice(2));
      expect(pg.log()).toContain(`DROPPED ${names[0]}`);
    } finally {
      await rename(`${h.repoDir}.down`, h.repoDir);
    }
    await pg.sql('insert into t values (99)');
    const next = await pg.sql('select pg_walfile_name(pg_switch_wal())');
    await waitArchived(pg, next, 120_000);

    const [first, second] = names as [string, string];
    // The gap is recorded by pushes that reach the repository again (one run of consecutive dropped
    // segments per record); one that fails to record it leaves it for the next push.
    const gapsDir = join(h.repoDir, walGapKey(h.cluster, first, second), '..');
    const records = async () =>
      (await readdir(gapsDir).catch(() => [] as string[])).flatMap((f) => {
        const m = /^([0-9A-F]{24})-([0-9A-F]{24})\.json$/.exec(f);
        return m ? [{ file: f, first: m[1] as string, last: m[2] as string }] : [];
      });
    const covered = async (name: string) => (await records()).some((r) => r.first <= name && name <= r.last);
    for (let attempt = 0; attempt < 5 && !((await covered(first)) && (await covered(second))); attempt++) {
      await pg.sql('insert into t values (100)');
      await waitArchived(pg, await pg.sql('select pg_walfile_name(pg_switch_wal())'), 120_000);
    }
    expect(await covered(first), JSON.stringify(await records())).toBe(true);
    expect(await covered(second), JSON.stringify(await records())).toBe(true);
    const record = (await records()).find((r) => r.first <= first && first <= r.last);
    const gap = JSON.parse(await readFile(join(gapsDir, record?.file ?? ''), 'utf8'));
    expect(gap).toMatchObject({
      first: record?.first,
      reason: expect.stringContaining('wal.maxBacklogBytes'),
    });
    const stored = await readdir(join(h.repoDir, walFilePrefix(h.cluster, first), '..'));
    expect(stored.filter((f) => f.startsWith(first) || f.startsWith(second))).toEqual([]);

    const restore = await h.pgkeep(['restore', '--pgdata', join(h.dir, 'restored')], pg.env);
    expect(restore.code).not.toBe(0);
    expect(restore.stderr).toContain(`recorded WAL gap ${first}`);
    const check = await h.pgkeep(['check', '--archive'], pg.env);
    // Under load the backlog may hold more segments when it is dropped: a reported gap covers the
    // two dropped here, whatever else was dropped with them.
    const gaps = [...check.stdout.matchAll(/([0-9A-F]{24}) to ([0-9A-F]{24}) missing/g)];
    expect(
      gaps.some(([, from = '', to = '']) => from <= first && second <= to),
      check.stdout,
    ).toBe(true);
  });
});
