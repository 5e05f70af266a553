/**
 * The WAL benchmark's sustained load (wal-push.ts): pgbench plus bulk writers while PostgreSQL
 * archives through a given archive_command, and the archive lag that results: for each segment,
 * the seconds from its `.ready` appearing in archive_status to it leaving (PostgreSQL renames it
 * to `.done` only once archive_command exited 0, i.e. once the tool says it is durably stored).
 */
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { PG_BIN, type PgCluster } from '../test/support/pg-cluster.ts';

const execFileAsync = promisify(execFile);
const SAMPLE_MS = 100;

export interface LoadResult {
  readonly segmentsPerSecond: number;
  /** Seconds from `.ready` to archived, one entry per segment. */
  readonly lags: number[];
  /** The most `.ready` segments seen at once. */
  readonly maxWaiting: number;
}

export const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
};

async function readyNow(statusDir: string): Promise<Set<string>> {
  return new Set((await readdir(statusDir)).filter((f) => /^[0-9A-F]{24}\.ready$/.test(f)));
}

/** Waits until nothing is waiting to be archived (the previous phase's backlog), up to 5 minutes. */
export async function drain(statusDir: string): Promise<void> {
  for (let i = 0; i < 600 && (await readyNow(statusDir)).size > 0; i++) await sleep(500);
  const left = (await readyNow(statusDir)).size;
  if (left > 0)
    throw new Error(`${left} segments still waiting after 5 minutes: is archive_command failing?`);
}

export async function setArchiveCommand(pg: PgCluster, command: string): Promise<void> {
  await pg.sql(`alter system set archive_command = '${command.replaceAll("'", "''")}'`);
  await pg.sql('select pg_reload_conf()');
}

/**
 * Runs `pgbench -c 4` and `writers` bulk writers for `seconds` with the archive_command already
 * set, sampling archive_status every 100 ms until every segment that became ready is archived.
 */
export async function archiveUnderLoad(pg: PgCluster, seconds: number, writers: number): Promise<LoadResult> {
  const statusDir = join(pg.dataDir, 'pg_wal', 'archive_status');
  const pgEnv = { ...process.env, ...pg.env };
  await drain(statusDir);
  const startLsn = await pg.sql('select pg_current_wal_lsn()');
  let running = true;
  const pgbench = execFileAsync(join(PG_BIN, 'pgbench'), ['-n', '-c', '4', '-T', String(seconds)], {
    env: pgEnv,
  }).finally(() => {
    running = false;
  });
  const bulk = Promise.all(
    Array.from({ length: writers }, async (_, i) => {
      await pg.sql(`create table if not exists filler${i} (g int, m text)`);
      while (running) {
        await pg.sql(`insert into filler${i} select g, md5(g::text) from generate_series(1, 100000) g`);
        await pg.sql(`truncate filler${i}`);
      }
    }),
  );
  const firstSeen = new Map<string, number>();
  const lags: number[] = [];
  let maxWaiting = 0;
  const deadline = () => performance.now() > started + (seconds + 300) * 1000;
  const started = performance.now();
  while ((running || firstSeen.size > 0) && !deadline()) {
    const now = performance.now();
    const ready = await readyNow(statusDir);
    maxWaiting = Math.max(maxWaiting, ready.size);
    for (const name of ready) if (!firstSeen.has(name)) firstSeen.set(name, now);
    for (const [name, seen] of firstSeen) {
      if (!ready.has(name)) {
        lags.push((now - seen) / 1000);
        firstSeen.delete(name);
      }
    }
    await sleep(SAMPLE_MS);
  }
  await pgbench;
  await bulk;
  if (firstSeen.size > 0) throw new Error(`${firstSeen.size} segments not archived 5 minutes after the load`);
  const walMb = Number(
    await pg.sql(`select round(pg_wal_lsn_diff(pg_current_wal_lsn(), '${startLsn}') / 1048576)`),
  );
  return { segmentsPerSecond: walMb / 16 / seconds, lags, maxWaiting };
}

export function describeLoad(tool: string, writers: number, r: LoadResult): string {
  const lag = (q: number) => (r.lags.length ? quantile(r.lags, q).toFixed(2) : '-');
  return (
    `${tool.padEnd(40)} ${String(writers).padStart(7)} ${r.segmentsPerSecond.toFixed(2).padStart(10)} ` +
    `${String(r.lags.length).padStart(8)} ${lag(0.5).padStart(9)} ${lag(0.99).padStart(8)} ${String(r.maxWaiting).padStart(11)}`
  );
}

export const LOAD_HEADER = `${'archive_command'.padEnd(40)} ${'writers'.padStart(7)} ${'segments/s'.padStart(10)} ${'segments'.padStart(8)} ${'lag p50 s'.padStart(9)} ${'p99 s'.padStart(8)} ${'most ready'.padStart(11)}`;
