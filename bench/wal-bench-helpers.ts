/** Helpers of the WAL benchmark (wal-push.ts): timing a shell line, figures, pgBackRest's setup. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
export const p90 = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))] as number;
export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
export const log = (text: string) => process.stderr.write(`${text}\n`);

export async function timedShell(command: string, cwd: string, env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn('sh', ['-c', command], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} exited ${code}: ${stderr}`)),
    );
  });
  return performance.now() - started;
}

/** Whether `perf stat` can count this process tree's task-clock here (finer than GNU time's 10 ms). */
const PERF = spawnSync('perf', ['stat', '-x,', '-e', 'task-clock', 'true']).status === 0;

/**
 * `command` with its wall milliseconds and the CPU milliseconds of the whole command tree (perf's
 * task-clock, or GNU time's user + system in 10 ms steps where perf is missing), which the load of
 * other processes on the machine disturbs far less than the wall clock.
 */
export async function timedShellCpu(
  command: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ wallMs: number; cpuMs: number }> {
  const started = performance.now();
  const counter = PERF
    ? ['perf', 'stat', '-x,', '-e', 'task-clock', '--']
    : ['/usr/bin/time', '-f', 'CPU %U %S', '--'];
  const stderr = await new Promise<string>((resolve, reject) => {
    const child = spawn(counter[0] as string, [...counter.slice(1), 'sh', '-c', command], {
      cwd,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let text = '';
    child.stderr.on('data', (d: Buffer) => {
      text += d.toString();
    });
    child.once('close', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`${command} exited ${code}: ${text}`)),
    );
  });
  const wallMs = performance.now() - started;
  const perf = /^([\d.]+),msec,task-clock/m.exec(stderr);
  if (perf) return { wallMs, cpuMs: Number(perf[1]) };
  const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
  if (!m) throw new Error(`no CPU time from perf or GNU time in: ${stderr}`);
  return { wallMs, cpuMs: (Number(m[1]) + Number(m[2])) * 1000 };
}

/**
 * Runs each row once per segment, the rows' order rotating from segment to segment so that the
 * load of a shared machine drifts over all alike; wall and CPU ms of each run, by row.
 */
export type TimedRows = Record<string, (segment: string) => Promise<{ wallMs: number; cpuMs: number }>>;

export async function alternate(
  segments: readonly string[],
  rows: TimedRows,
  results: Record<string, number[]>,
  cpu: Record<string, number[]>,
): Promise<void> {
  const entries = Object.entries(rows);
  for (const [row] of entries) [results[row], cpu[row]] = [[], []];
  for (const [i, s] of segments.entries()) {
    const order = [...entries.slice(i % entries.length), ...entries.slice(0, i % entries.length)];
    for (const [row, run] of order) {
      const { wallMs, cpuMs } = await run(s);
      results[row]?.push(wallMs);
      cpu[row]?.push(cpuMs);
    }
  }
}

/** The synchronous rows' wall and CPU medians, each as a ratio to pgBackRest's `reference` row. */
export function printSynchronous(
  reference: string,
  results: Record<string, number[]>,
  cpu: Record<string, number[]>,
): void {
  const unit = PERF ? 'perf task-clock' : 'GNU time user + system, 10 ms steps';
  console.log(`\nsynchronous, alternating, ms per segment (CPU: ${unit}, whole command tree):`);
  console.log(
    `${'command'.padEnd(48)} ${'wall p50'.padStart(9)} ${'wall p90'.padStart(9)} ${'CPU p50'.padStart(8)} ${'CPU p90'.padStart(8)}  ratio to ${reference} (wall, CPU)`,
  );
  const base = { wall: median(results[reference] ?? []), cpu: median(cpu[reference] ?? []) };
  for (const [row, times] of Object.entries(cpu)) {
    const wall = results[row] ?? [];
    const cells = [median(wall), p90(wall), median(times), p90(times)].map((x) => x.toFixed(0).padStart(8));
    const ratio = `${(median(wall) / base.wall).toFixed(2)}x, ${(median(times) / base.cpu).toFixed(2)}x`;
    console.log(`${row.padEnd(48)}  ${cells.join(' ')}  ${row === reference ? '' : ratio}`);
  }
  console.log(
    `load average at the end: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
}

export const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * pgBackRest configured like the reference (posix repo, zst level 3, aes-256-cbc) under `br`, for
 * the cluster at `pg`; returns the config file's path. `async`: archive-push and archive-get
 * asynchronous (archive-async=y, process-max=2, and archive-get's prefetch queue), as a pgBackRest
 * user who cares about speed runs it.
 */
export async function writePgbackrestConfig(
  br: string,
  pg: { readonly dataDir: string; readonly port: number },
  socketDir: string,
  async = false,
): Promise<string> {
  await mkdir(join(br, 'repo'), { recursive: true });
  await mkdir(join(br, 'lock'));
  await mkdir(join(br, 'spool'));
  await mkdir(join(br, 'log'));
  const brConfig = join(br, 'pgbackrest.conf');
  await writeFile(
    brConfig,
    `[global]
repo1-path=${br}/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-cipher-pass-0123456789abcdef
compress-type=zst
compress-level=3
lock-path=${br}/lock
spool-path=${br}/spool
log-path=${br}/log
log-level-console=warn
log-level-file=off
${async ? 'archive-async=y\nprocess-max=2\narchive-get-queue-max=256MiB\n' : ''}
[bench]
pg1-path=${pg.dataDir}
pg1-port=${pg.port}
pg1-socket-path=${socketDir}
pg1-user=postgres
`,
  );
  return brConfig;
}

/**
 * Prints the per-segment table of every row, the synchronous rows' CPU time, and each comparison
 * as a ratio beside its reference.
 */
export function printComparison(
  segments: number,
  results: Record<string, number[]>,
  cpu: Record<string, number[]>,
  agentTotal: number,
): void {
  printSynchronous('pgbackrest archive-push', results, cpu);
  console.log(`\n${segments} segments of 16 MiB (pgbench), sequential invocations, ms per segment:`);
  console.log(`${'command'.padEnd(40)} ${'median'.padStart(8)} ${'p90'.padStart(8)} ${'mean'.padStart(8)}`);
  for (const [name, times] of Object.entries(results)) {
    const cells = [median(times), p90(times), mean(times)].map((x) => x.toFixed(0).padStart(8));
    console.log(`${name.padEnd(40)} ${cells.join(' ')}`);
  }
  const vs = (ours: string, theirs: string) => {
    const a = results[ours] as number[];
    const b = results[theirs] as number[];
    return `median ${(median(a) / median(b)).toFixed(2)}x, p90 ${(p90(a) / p90(b)).toFixed(2)}x the time`;
  };
  console.log(
    `\nsynchronous: pgkeep wal-push (asyncSeconds 0) vs pgbackrest archive-push: ${vs('pgkeep wal-push (alone, synchronous)', 'pgbackrest archive-push')}` +
      `\nasynchronous, called back to back: pgkeep (transient pusher) vs pgbackrest archive-async: ${vs('pgkeep wal-push (alone)', 'pgbackrest archive-push (async)')}` +
      `\npgkeep + agent, backlog: ${(agentTotal / segments).toFixed(0)} ms per segment from the agent's start` +
      `\nwal-fetch (prefetch) vs archive-get: ${vs('pgkeep wal-fetch (prefetch)', 'pgbackrest archive-get')}` +
      `\nwal-fetch (prefetch) vs archive-get async: ${vs('pgkeep wal-fetch (prefetch)', 'pgbackrest archive-get (async)')}`,
  );
}

/** Prints each tool's recovery times and pgkeep's ratio to each pgBackRest mode. */
export function printRecovery(segments: number, replays: Record<string, number[]>): void {
  const secs = (xs: number[] | undefined) => (xs ?? []).map((x) => (x / 1000).toFixed(2)).join(', ');
  const replayRatio = (tool: string) =>
    (mean(replays.pgkeep as number[]) / mean(replays[tool] as number[])).toFixed(2);
  console.log(
    `\nrecovery from a base backup replaying the ${segments} archived segments to the end (s, two rounds each): ` +
      `pgBackRest archive-get ${secs(replays.pgbackrest)}; pgBackRest async ${secs(replays['pgbackrest async'])}; ` +
      `pgkeep wal-fetch with prefetch ${secs(replays.pgkeep)}; pgkeep takes ${replayRatio('pgbackrest')}x ` +
      `pgBackRest's time, ${replayRatio('pgbackrest async')}x pgBackRest async's`,
  );
}

export interface PgkeepBenchConfig {
  readonly repo: string;
  readonly spool: string;
  readonly config: string;
  readonly env: NodeJS.ProcessEnv;
}

/** A pgkeep config of its own (`work`/pgkeep-`name`.yaml) with a file:// repository and a spool. */
export async function writePgkeepConfig(
  work: string,
  name: string,
  keys: { readonly recipient: string; readonly identityFile: string },
  wal: Record<string, unknown>,
): Promise<PgkeepBenchConfig> {
  const repo = join(work, `repo-${name}`);
  const spool = join(work, `spool-${name}`);
  await mkdir(repo);
  await mkdir(spool);
  const config = join(work, `pgkeep-${name}.yaml`);
  const { recipient, identityFile } = keys;
  const settings = { cluster: 'bench', repository: `file://${repo}`, recipients: [recipient], identityFile };
  await writeFile(config, JSON.stringify({ ...settings, spoolDir: spool, wal }));
  return { repo, spool, config, env: { PATH: process.env.PATH, PGKEEP_CONFIG: config } };
}
