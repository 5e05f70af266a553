/**
 * Point-in-time recovery end to end: a real cluster archiving through `pgkeep wal-push` under a
 * pgbench write load, a base backup, a restore to a recorded time T (after which a table was
 * dropped), a restore to the end of the archive, and recovery onto a timeline that a restored and
 * promoted cluster created.
 */
import { execFile } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PgCluster, startCluster, startExistingCluster } from '../../support/pg-cluster.ts';
import {
  archiveSettings,
  type Harness,
  makeHarness,
  PG_BIN,
  switchAndWaitArchived,
  waitPromoted,
} from '../wal/harness.ts';

const execFileAsync = promisify(execFile);

/** Row counts and content checksums of the pgbench tables (history may be gone). */
async function state(cluster: PgCluster): Promise<string> {
  const hasHistory = (await cluster.sql("select to_regclass('pgbench_history') is not null")) === 't';
  const history = hasHistory ? await cluster.sql('select count(*) from pgbench_history') : 'dropped';
  return `${await tables(cluster)} history=${history}`;
}

async function tables(cluster: PgCluster): Promise<string> {
  return await cluster.sql(`
    select string_agg(t || '=' || s, ' ' order by t) from (
      select 'accounts' as t, count(*) || ':' || sum(abalance) || ':' || md5(string_agg(aid || ',' || abalance, ';' order by aid)) as s from pgbench_accounts
      union all select 'tellers', count(*) || ':' || md5(string_agg(tid || ',' || tbalance, ';' order by tid)) from pgbench_tellers
      union all select 'branches', count(*) || ':' || md5(string_agg(bid || ',' || bbalance, ';' order by bid)) from pgbench_branches
    ) x`);
}

async function pgbench(cluster: PgCluster, args: string[]): Promise<void> {
  await execFileAsync(join(PG_BIN, 'pgbench'), args, { env: { ...process.env, ...cluster.env } });
}

let h: Harness;
let primary: PgCluster;
const started: PgCluster[] = [];
const restoreDirs: string[] = [];

beforeAll(async () => {
  h = await makeHarness('pitr');
  primary = await startCluster({ settings: archiveSettings(h) });
  started.push(primary);
});

afterAll(async () => {
  for (const c of started) await c.destroy().catch(() => {});
  await rm(h.dir, { recursive: true, force: true });
});

async function restoreAndStart(args: string[], archive: boolean): Promise<PgCluster> {
  const dir = join(h.dir, `restore-${restoreDirs.length}`, 'data');
  restoreDirs.push(dir);
  const restored = await h.pgkeep(['restore', '--pgdata', dir, ...args]);
  expect(restored.stderr).toBe('');
  expect(restored.code).toBe(0);
  const cluster = await startExistingCluster(dir, {
    settings: archive ? archiveSettings(h) : { archive_mode: 'off' },
  });
  started.push(cluster);
  await waitPromoted(cluster);
  return cluster;
}

describe('point-in-time recovery through pgkeep', () => {
  let stateAtT = '';
  let timeT = '';
  let lsnT = '';
  let finalState = '';

  it('archives under load, takes a base backup and records a point in time', async () => {
    await pgbench(primary, ['-i', '-s', '2', '-q']);
    const backup = await h.pgkeep(['basebackup', '--json'], primary.env);
    expect(backup.stderr).toBe('');
    expect(backup.code).toBe(0);
    const manifest = JSON.parse(backup.stdout);
    expect(manifest).toMatchObject({
      kind: 'base',
      timeline: 1,
      startLsn: expect.any(String),
      stopLsn: expect.any(String),
    });
    expect(manifest.objects.map((o: { role: string }) => o.role)).toEqual(['base']);

    await pgbench(primary, ['-c', '2', '-T', '3', '-n']);
    await switchAndWaitArchived(primary);
    timeT = await primary.sql('select clock_timestamp()');
    lsnT = await primary.sql('select pg_current_wal_lsn()');
    stateAtT = await state(primary);
    await new Promise((r) => setTimeout(r, 500));
    await pgbench(primary, ['-c', '2', '-T', '2', '-n']);
    await primary.sql('drop table pgbench_history');
    await switchAndWaitArchived(primary);
    finalState = await state(primary);
    expect(finalState).toContain('history=dropped');
    expect(finalState).not.toBe(stateAtT);
  });

  it('restores to the end of the archive without losing anything archived', async () => {
    const restored = await restoreAndStart([], false);
    expect(await state(restored)).toBe(finalState);
    await restored.stop();
  });

  it('restores to an LSN', async () => {
    const restored = await restoreAndStart(['--target-lsn', lsnT, '--target-action', 'promote'], false);
    expect(await state(restored)).toBe(stateAtT);
    await restored.stop();
  });

  it('restores to time T exactly, and a restore adopted as the new primary writes a new timeline that a later restore follows', async () => {
    const restored = await restoreAndStart(['--target-time', timeT], true);
    expect(await state(restored)).toBe(stateAtT);
    expect(await restored.sql('select timeline_id from pg_control_checkpoint()')).not.toBe('1');
    // A real failover: the restored copy becomes the primary (without this its WAL is refused).
    const adopted = await h.pgkeep([
      'promote-archive',
      '--pgdata',
      restoreDirs[restoreDirs.length - 1] as string,
    ]);
    expect(adopted.stderr).toBe('');
    expect(adopted.stdout).toContain('00000002.history stored');

    // Timeline 2: writes after the promotion, archived through pgkeep like any other WAL.
    await restored.sql('create table after_promotion as select g from generate_series(1, 1000) g');
    await restored.sql('checkpoint');
    await switchAndWaitArchived(restored);
    const timeline2State = `${await state(restored)} ${await restored.sql('select count(*) from after_promotion')}`;
    await restored.stop();
    const walDirs = await readdir(join(h.repoDir, 'v1', 'pitr', 'wal'));
    expect(walDirs).toEqual(['00000001', '00000002']);

    const again = await restoreAndStart([], false);
    expect(`${await state(again)} ${await again.sql('select count(*) from after_promotion')}`).toBe(
      timeline2State,
    );
  });
});
