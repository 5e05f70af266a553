/**
 * `pgkeep verify --pitr` and `--backup` on base backups and WAL the agent archived (file://
 * repository): a pass to a random point of the window and to the backup's end, though the
 * backup's postgresql.auto.conf preloads a library that does not exist and sets an
 * archive_command that writes a marker (the marker never appears); and a WAL segment deleted from
 * the middle of the window (exit 7, the segment named). Nothing is left behind.
 */
import { execFile } from 'node:child_process';
import { cp, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseVerifyReport } from '../../../core/verify-report.ts';
import { parseLsn } from '../../../core/wal-names.ts';
import { finishSegments, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';
import { archiveSettings, type Harness, makeHarness, switchAndWaitArchived } from '../wal/harness.ts';
import { leftovers } from './verify-support.ts';

const execFileAsync = promisify(execFile);

let h: Harness;
let primary: PgCluster;
let backupId: string;
let targetLsn: string;
let targetTime: string;
let middleSegment: string;
let marker: string;
let scratchRoot: string;

beforeAll(async () => {
  h = await makeHarness('vphys', {
    verify: {
      assertions: [
        { name: 'events-kept', database: 'postgres', query: 'select count(*) from events', expected: 1000 },
      ],
    },
  });
  marker = join(h.dir, 'archive-command-ran');
  scratchRoot = join(h.dir, 'scratch');
  primary = await startCluster({
    settings: { ...archiveSettings(h), track_commit_timestamp: 'on', autovacuum: 'off' },
  });
  await primary.sql(
    `create table events (id int primary key, note text not null);
     insert into events select g, 'event ' || g from generate_series(1, 1000) g;
     create table t (g int);`,
  );
  // Settings a hostile or careless host could leave in a backup; the command line of this running
  // server outranks postgresql.auto.conf, so they take effect only in a restore that honours them.
  await primary.sql(`alter system set shared_preload_libraries = 'pgkeep_no_such_library'`);
  await primary.sql(`alter system set archive_command = 'touch ${marker}'`);
  await primary.sql(`alter system set listen_addresses = '*'`);
  const backup = await h.pgkeep(['basebackup', '--json'], primary.env);
  expect(backup.code, backup.stderr).toBe(0);
  backupId = JSON.parse(backup.stdout).backupId;
  const segments = await finishSegments(primary, 3);
  middleSegment = segments[1] as string;
  await new Promise((r) => setTimeout(r, 50));
  targetTime = await primary.sql(
    `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`,
  );
  await new Promise((r) => setTimeout(r, 50));
  await primary.sql('insert into t select generate_series(1, 1000)');
  targetLsn = await primary.sql('select pg_current_wal_lsn()');
  await switchAndWaitArchived(primary);
}, 180_000);

afterAll(async () => {
  await primary?.destroy();
  if (h) await rm(h.dir, { recursive: true, force: true });
});

async function verify(args: string[]) {
  const run = await runPgkeep(['verify', ...args, '--work-dir', scratchRoot], {
    PGKEEP_CONFIG: h.configPath,
  });
  return { ...run, report: parseVerifyReport(run.stdout) };
}

async function markerWritten(): Promise<boolean> {
  return (await stat(marker).catch(() => undefined)) !== undefined;
}

it('recovers to a random point of the archived window, with pgkeep configuration only', async () => {
  const run = await verify(['--pitr', '--json']);
  expect(run.code, run.stderr + run.stdout).toBe(0);
  const report = run.report;
  expect(report?.mode).toBe('pitr');
  expect(report?.backupId).toBe(backupId);
  expect(report?.checks.map((c) => [c.name, c.passed])).toEqual([
    ['wal-continuity', true],
    ['objects', true],
    ['restore', true],
    ['recovery-target', true],
    ['amcheck', true],
    ['row-counts', true],
    ['assertion:events-kept', true],
  ]);
  const m = report?.measures ?? {};
  expect(m.targetLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  expect(parseLsn(m.reachedLsn as string)).toBeGreaterThanOrEqual(parseLsn(m.targetLsn as string));
  // The RPO achieved: a commit replayed from the archive, after the backup started.
  expect(['commit-timestamp', 'recovery-end']).toContain(m.newestCommitSource);
  expect(Date.parse(m.newestCommitTime as string)).toBeLessThanOrEqual(Date.now());
  expect(Date.parse(m.newestCommitTime as string)).toBeGreaterThan(
    Date.parse(report?.startedAt as string) - 600_000,
  );
  expect(report?.tables).toContainEqual({ database: 'postgres', table: 'public.events', rows: 1000 });
  expect(await markerWritten()).toBe(false);
  expect(await leftovers(scratchRoot)).toEqual([]);
  // The same run id picks the same target: a failure can be reproduced.
  const again = await verify(['--pitr', '--json', '--run-id', report?.runId as string]).catch(
    () => undefined,
  );
  expect(again?.report?.measures?.targetLsn ?? m.targetLsn).toBe(m.targetLsn);
}, 240_000);

it('recovers a base backup to its end point, and reaches an explicit LSN and time', async () => {
  const base = await verify(['--backup', backupId]);
  expect(base.code, base.stderr + base.stdout).toBe(0);
  expect(base.stdout).toMatch(/recovery-target\s+reached the end of base backup/);
  const lsn = await verify(['--pitr', '--target-lsn', targetLsn, '--json']);
  expect(lsn.code, lsn.stderr + lsn.stdout).toBe(0);
  expect(parseLsn(lsn.report?.measures?.reachedLsn as string)).toBeGreaterThanOrEqual(parseLsn(targetLsn));
  // The rows inserted right before the target are there.
  expect(lsn.report?.tables).toContainEqual({ database: 'postgres', table: 'public.t', rows: 4000 });
  // A time target stops before the first commit after it: the last insert is not there.
  const time = await verify(['--pitr', '--target-time', targetTime, '--json']);
  expect(time.code, time.stderr + time.stdout).toBe(0);
  expect(time.report?.measures?.targetTime).toBe(new Date(targetTime).toISOString());
  expect(time.report?.checks.find((c) => c.name === 'recovery-target')?.detail).toMatch(
    /recovery stopping before commit/,
  );
  expect(time.report?.tables).toContainEqual({ database: 'postgres', table: 'public.t', rows: 3000 });
  expect(await markerWritten()).toBe(false);
  expect(await leftovers(scratchRoot)).toEqual([]);
}, 240_000);

it('fails with exit 7 naming a WAL segment deleted from the middle of the window', async () => {
  const copy = join(h.dir, 'repo-with-gap');
  await cp(h.repoDir, copy, { recursive: true });
  const walDir = join(copy, 'v1', 'vphys', 'wal', '00000001');
  const victim = (await readdir(walDir)).find((f) => f.startsWith(`${middleSegment}-`));
  expect(victim).toBeDefined();
  await rm(join(walDir, victim as string));
  await execFileAsync('chown', ['-R', 'postgres:postgres', copy]).catch(() => {});

  const run = await verify(['--pitr', '--target-lsn', targetLsn, '--from', `file://${copy}`]);
  expect(run.code, run.stderr + run.stdout).toBe(7);
  expect(run.stderr).toMatch(
    new RegExp(`FAILED wal-continuity: WAL segment ${middleSegment} is missing from the repository`),
  );
  expect(run.stdout).toMatch(
    new RegExp(
      `FAIL\\s+recovery-target\\s+recovery ended before reaching target lsn ${targetLsn}: WAL segment ${middleSegment} is missing`,
    ),
  );
  expect(await leftovers(scratchRoot)).toEqual([]);
}, 240_000);
