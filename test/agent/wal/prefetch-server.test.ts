/**
 * The WAL prefetcher ends with the server it prefetches for: a restored server stopped while
 * still in recovery, or one that has promoted, leaves no `pgkeep wal-prefetch` process for its data
 * directory within a few seconds (its idle time is 30 s; nothing could take its files any more).
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WalSpool } from '../../../agent/wal/spool.ts';
import { type PgCluster, startCluster, startExistingCluster } from '../../support/pg-cluster.ts';
import {
  archiveSettings,
  type Harness,
  makeHarness,
  switchAndWaitArchived,
  waitPromoted,
} from './harness.ts';

const execFileAsync = promisify(execFile);

let h: Harness;
let primary: PgCluster;
const started: PgCluster[] = [];
/** An LSN just after the base backup, with 8 archived segments after it. */
let earlyLsn = '';
/** The postmaster of the server stopped during recovery, and its data directory. */
let stoppedPostmaster = 0;
let stoppedDir = '';

/** The command lines of running processes that prefetch for `dataDir`. */
async function prefetchers(dataDir: string): Promise<string[]> {
  const { stdout } = await execFileAsync('ps', ['-eo', 'pid,args']);
  return stdout.split('\n').filter((l) => l.includes('wal-prefetch') && l.includes(dataDir));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function restoreAndStart(name: string, action: 'pause' | 'promote'): Promise<PgCluster> {
  const dir = join(h.dir, name, 'data');
  const restored = await h.pgkeep([
    'restore',
    '--pgdata',
    dir,
    '--target-lsn',
    earlyLsn,
    '--target-action',
    action,
  ]);
  expect(restored.stderr).toBe('');
  expect(restored.code).toBe(0);
  const cluster = await startExistingCluster(dir, { settings: { archive_mode: 'off' } });
  started.push(cluster);
  return cluster;
}

beforeAll(async () => {
  h = await makeHarness('prefetch-server');
  primary = await startCluster({ settings: archiveSettings(h) });
  started.push(primary);
  const backup = await h.pgkeep(['basebackup'], primary.env);
  expect(backup.code, backup.stderr).toBe(0);
  await primary.sql('create table t as select g from generate_series(1, 1000) g');
  earlyLsn = await primary.sql('select pg_current_wal_lsn()');
  for (let i = 0; i < 8; i++) {
    await primary.sql(`insert into t select g from generate_series(1, 1000) g`);
    await switchAndWaitArchived(primary);
  }
});

afterAll(async () => {
  for (const c of started) await c.destroy().catch(() => {});
  // A pgkeep process ending now (an archive_command's wal-push) still writes Node's compile cache
  // into the spool as it exits: let it end before the directory goes.
  await waitFor(
    'no process of the test left',
    async () =>
      (await execFileAsync('ps', ['-eo', 'args'])).stdout.split('\n').every((l) => !l.includes(h.dir)),
    10_000,
  ).catch(() => undefined);
  await rm(h.dir, { recursive: true, force: true });
});

describe('the WAL prefetcher of a restored server', () => {
  it('ends within a few seconds when the server is stopped during recovery', async () => {
    const restored = await restoreAndStart('paused', 'pause');
    await waitFor(
      'recovery paused at the target',
      async () => (await restored.sql('select pg_get_wal_replay_pause_state()').catch(() => '')) === 'paused',
      60_000,
    );
    // The archive goes on past the target: the prefetcher has a full window and is idle, not done.
    expect(await prefetchers(restored.dataDir)).toHaveLength(1);
    stoppedPostmaster = Number(
      (await readFile(join(restored.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0],
    );
    stoppedDir = restored.dataDir;
    await restored.stop();
    const took = await waitFor(
      'the prefetcher ends after its server stopped',
      async () => (await prefetchers(restored.dataDir)).length === 0,
      5_000,
    );
    expect(took).toBeLessThan(5_000);
  });

  it('ends within a few seconds when recovery has ended, the server still running', async () => {
    const restored = await restoreAndStart('promoted', 'promote');
    await waitPromoted(restored);
    // A prefetcher did run for it (it made its directory in the data directory's spool).
    const spool = new WalSpool(h.spoolDir, h.cluster, restored.dataDir);
    expect(await readdir(spool.prefetchDir)).not.toHaveLength(0);
    await waitFor(
      'the prefetcher ends after promotion',
      async () => (await prefetchers(restored.dataDir)).length === 0,
      5_000,
    );
    expect(await restored.sql('select count(*) from t')).toBe('1000');
    await restored.stop();
  });

  it('a prefetcher that starts after its server stopped (wal-fetch saw it running) ends at once', async () => {
    expect(stoppedPostmaster).toBeGreaterThan(0);
    const segment = await primary.sql(`select pg_walfile_name('${earlyLsn}')`);
    const started = Date.now();
    const run = await h.pgkeep([
      'wal-prefetch',
      '--pgdata',
      stoppedDir,
      '--postmaster',
      String(stoppedPostmaster),
      segment,
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // Its idle time is 30 s: without the postmaster to watch it would wait that long.
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
