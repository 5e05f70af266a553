/**
 * The operator's scenario (issue 17 §1): a test restore of production, started on another port and
 * written to, must not touch production's archive, and a later "restore to latest" must return
 * production's writes, not the copy's. Production's archive settings live in postgresql.auto.conf
 * (ALTER SYSTEM), so the base backup, and every copy restored from it, inherits them.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESTORED_MARKER_FILE } from '../../../agent/physical/restored-marker.ts';
import { livePidFileHolder } from '../../../agent/pid-lock.ts';
import { WalSpool } from '../../../agent/wal/spool.ts';
import { type PgCluster, startCluster, startExistingCluster } from '../../support/pg-cluster.ts';
import { stopWalPusher } from '../../support/pgkeep-cli.ts';
import {
  type Harness,
  makeHarness,
  switchAndWaitArchived,
  waitArchived,
  waitPromoted,
} from '../wal/harness.ts';

let h: Harness;
let production: PgCluster;
const started: PgCluster[] = [];
let timeT = '';
let copyDir = '';

async function rows(cluster: PgCluster): Promise<string> {
  return await cluster.sql("select string_agg(v, ',' order by v) from t");
}

const restoredDirs: string[] = [];

async function restore(name: string, args: string[]): Promise<string> {
  const dir = join(h.dir, name, 'data');
  restoredDirs.push(dir);
  const result = await h.pgkeep(['restore', '--pgdata', dir, ...args]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return dir;
}

/** Starts a restored directory with nothing but its own (restored) configuration. */
async function startRestored(dir: string, serverEnv: Record<string, string> = {}): Promise<PgCluster> {
  const cluster = await startExistingCluster(dir, { serverEnv });
  started.push(cluster);
  await waitPromoted(cluster);
  return cluster;
}

async function walTimelines(): Promise<string[]> {
  return (await readdir(join(h.repoDir, 'v1', h.cluster, 'wal'))).sort();
}

beforeAll(async () => {
  h = await makeHarness('prod');
  production = await startCluster({ settings: { archive_mode: 'on', wal_level: 'replica' } });
  started.push(production);
  await production.sql('alter system set archive_mode = on');
  await production.sql(`alter system set archive_command = '${h.archiveCommand.replaceAll("'", "''")}'`);
  await production.sql('select pg_reload_conf()');
  await production.sql('create table t (v text)');
  await production.sql("insert into t values ('before-backup')");
  const backup = await h.pgkeep(['basebackup'], production.env);
  expect(backup.stderr).toBe('');
  expect(backup.code).toBe(0);
  await production.sql("insert into t values ('at-T')");
  await switchAndWaitArchived(production);
  timeT = await production.sql('select clock_timestamp()');
  await new Promise((r) => setTimeout(r, 300));
  await production.sql("insert into t values ('after-T')");
  await switchAndWaitArchived(production);
});

afterAll(async () => {
  for (const c of started) await c.destroy().catch(() => {});
  if (copyDir) await stopWalPusher(h.spoolDir, h.cluster, copyDir).catch(() => {});
  // A recovery's detached prefetcher may still be idling out: stop it before removing its spool.
  for (const dir of restoredDirs) {
    const pid = await livePidFileHolder(new WalSpool(h.spoolDir, h.cluster, dir).prefetchLockFile);
    if (pid !== undefined) process.kill(pid, 'SIGKILL');
  }
  await rm(h.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
});

describe('a test restore next to production', () => {
  it('does not archive, refuses wal-push, and a restore to latest returns exactly production', async () => {
    const dir = await restore('copy', ['--target-time', timeT]);
    const marker = JSON.parse(await readFile(join(dir, RESTORED_MARKER_FILE), 'utf8'));
    expect(marker).toMatchObject({ cluster: h.cluster, archive: { mode: 'off' } });
    const copy = await startRestored(dir);
    expect(await rows(copy)).toBe('at-T,before-backup');
    expect(await copy.sql('show archive_mode')).toBe('off');
    await copy.sql("insert into t values ('test-copy')");
    const copyWal = await copy.sql('select pg_walfile_name(pg_switch_wal())');
    await copy.sql('checkpoint');

    // Even by hand (or with archive_mode turned back on), the copy's WAL is refused.
    const pushed = await h.pgkeep(['wal-push', `pg_wal/${copyWal}`], {}, dir);
    expect(pushed.code).toBe(6);
    expect(pushed.stderr).toContain('pgkeep promote-archive');

    await production.sql("insert into t values ('after-copy')");
    await switchAndWaitArchived(production);
    const productionRows = await rows(production);

    const latest = await startRestored(await restore('latest', []));
    expect(await rows(latest)).toBe(productionRows);
    expect(productionRows).toContain('after-copy');
    expect(productionRows).not.toContain('test-copy');
    await latest.stop();
    await copy.stop();
    expect(await walTimelines()).toEqual(['00000001']);
  });

  it('a copy that archives (--archive keep) slows no archive_command of production and a restore to latest still follows production', async () => {
    copyDir = await restore('keep', ['--target-time', timeT, '--archive', 'keep']);
    // This copy also keeps a transient pusher running (production's config has none): under one
    // shared spool, production's archive_command waited for it 10 s a segment.
    const copy = await startRestored(copyDir, { PGKEEP_WAL_ASYNC_SECONDS: '60' });
    await copy.sql("insert into t values ('keep-copy')");
    await switchAndWaitArchived(copy);
    expect(await walTimelines()).toEqual(['00000001', '00000002']);
    const copyPusher = new WalSpool(h.spoolDir, h.cluster, copyDir).agentPidFile;
    expect(await livePidFileHolder(copyPusher)).toBeDefined();

    for (let i = 0; i < 3; i++) {
      await production.sql(`insert into t values ('after-keep-${i}')`);
      const name = await production.sql('select pg_walfile_name(pg_switch_wal())');
      const startedAt = Date.now();
      await waitArchived(production, name, 30_000);
      expect(Date.now() - startedAt).toBeLessThan(5_000);
    }
    expect(await livePidFileHolder(copyPusher)).toBeDefined();
    const productionRows = await rows(production);

    // The copy's timeline 2 is the highest in the archive, but production's segments are the newest.
    const dir = await restore('latest-2', []);
    expect(await readFile(join(dir, 'postgresql.auto.conf'), 'utf8')).toContain(
      "recovery_target_timeline = '1'",
    );
    const latest = await startRestored(dir);
    expect(await rows(latest)).toBe(productionRows);
    expect(productionRows).not.toContain('keep-copy');
  });

  it('--archive new-cluster NAME archives the copy into cluster NAME and nowhere else', async () => {
    const before = await walTimelines();
    const dir = await restore('elsewhere', ['--target-time', timeT, '--archive', 'new-cluster', 'staging']);
    const copy = await startRestored(dir);
    expect(await copy.sql('show archive_mode')).toBe('on');
    await copy.sql("insert into t values ('staging-copy')");
    await switchAndWaitArchived(copy);
    const staging = await readdir(join(h.repoDir, 'v1', 'staging', 'wal'));
    expect(staging.length).toBeGreaterThan(0);
    expect(await walTimelines()).toEqual(before);
    await copy.stop();
  });
});
