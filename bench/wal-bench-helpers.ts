/** Helpers of the WAL benchmark (wal-push.ts): timing a shell line, figures, pgBackRest's setup. */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
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

/**
 * `command` under GNU time: wall milliseconds and the CPU milliseconds (user + system) of the whole
 * command tree, which the load of other processes on the machine disturbs far less than the wall
 * clock (GNU time counts in 10 ms steps, so only medians over many runs mean anything).
 */
export async function timedShellCpu(
  command: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ wallMs: number; cpuMs: number }> {
  const started = performance.now();
  const stderr = await new Promise<string>((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'CPU %U %S', 'sh', '-c', command], {
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
  const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
  if (!m) throw new Error(`no CPU time from GNU time in: ${stderr}`);
  return { wallMs, cpuMs: (Number(m[1]) + Number(m[2])) * 1000 };
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
  const ours = cpu['pgkeep wal-push (alone, synchronous)'] as number[];
  const theirs = cpu['pgbackrest archive-push'] as number[];
  console.log(
    `\nCPU ms per segment (user + system of the command tree, 10 ms steps), synchronous, alternating: ` +
      `pgbackrest archive-push median ${median(theirs).toFixed(0)}, p90 ${p90(theirs).toFixed(0)}; ` +
      `pgkeep wal-push median ${median(ours).toFixed(0)}, p90 ${p90(ours).toFixed(0)}: ` +
      `${(median(ours) / median(theirs)).toFixed(2)}x at the median`,
  );
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
