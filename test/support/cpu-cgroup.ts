/**
 * A share of one CPU, as Lambda gives a function: a fresh cgroup (v1, `cpu` controller) whose CFS
 * quota is that share of each period, for emulating a memory size on this machine
 * (`npm run bench lambda-duration`). Lambda allots CPU in proportion to memory, one vCPU at
 * 1,769 MB. A child joins the cgroup before it execs (see {@link CpuCgroup.command}), so nothing it
 * runs, its threads included, escapes the quota.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type CliResult, outputOf } from './pgkeep-cli.ts';

/** Where cgroup v1 mounts the `cpu` controller. */
export const CPU_CGROUP_ROOT = '/sys/fs/cgroup/cpu';
/** Lambda gives a function one vCPU at this many MB, and CPU in proportion below it. */
export const VCPU_AT_MB = 1769;
const PERIOD_US = 100_000;

/** The share of one CPU Lambda gives a function of `memoryMb`, up to its first full vCPU. */
export function lambdaCpuShare(memoryMb: number): number {
  return memoryMb / VCPU_AT_MB;
}

export interface CpuCgroup {
  readonly path: string;
  readonly share: number;
  /** `argv` wrapped so the process joins this cgroup before it execs: `spawn(cmd[0], cmd.slice(1))`. */
  command(argv: readonly string[]): string[];
  /** Periods run and periods throttled (the quota ran out) so far, from `cpu.stat`. */
  throttling(): Promise<{ periods: number; throttled: number }>;
}

/**
 * Runs `work` with a new cgroup limited to `share` of one CPU (0 < share ≤ 1) and removes the
 * cgroup afterwards, also when `work` fails; the processes started in it must have exited by then.
 * Throws, saying why and what to do, when the cgroup cannot be made: figures measured without the
 * limit would be wrong, not merely less exact.
 */
export async function withCpuCgroup<T>(
  name: string,
  share: number,
  work: (cgroup: CpuCgroup) => Promise<T>,
): Promise<T> {
  if (!(share > 0 && share <= 1))
    throw new Error(`cpu share ${share} is not in (0, 1]; give a share of one CPU`);
  if (!existsSync(join(CPU_CGROUP_ROOT, 'cpu.cfs_quota_us')))
    throw new Error(
      `no cgroup v1 cpu controller at ${CPU_CGROUP_ROOT}; the CPU share needs it (run as root on a host that mounts it)`,
    );
  const path = join(CPU_CGROUP_ROOT, `${name}-${process.pid}`);
  try {
    await mkdir(path);
    await writeFile(join(path, 'cpu.cfs_period_us'), `${PERIOD_US}`);
    await writeFile(join(path, 'cpu.cfs_quota_us'), `${Math.round(share * PERIOD_US)}`);
  } catch (cause) {
    await rmdir(path).catch(() => {});
    throw new Error(
      `cannot make cgroup ${path} limited to ${share.toFixed(3)} CPU (${(cause as Error).message}); run as root where ${CPU_CGROUP_ROOT} is writable`,
      { cause },
    );
  }
  const cgroup: CpuCgroup = {
    path,
    share,
    command: (argv) => ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', join(path, 'cgroup.procs'), ...argv],
    async throttling() {
      const stat = await readFile(join(path, 'cpu.stat'), 'utf8');
      const field = (f: string) => Number(new RegExp(`^${f} (\\d+)$`, 'm').exec(stat)?.[1] ?? Number.NaN);
      return { periods: field('nr_periods'), throttled: field('nr_throttled') };
    },
  };
  // An exit before `work` settles (the bench interrupted) kills what runs in the cgroup and removes it.
  // A killed process leaves the cgroup only once it has exited, so the removal waits (up to 2 s).
  const onExit = () => {
    try {
      const procs = () => readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
      for (const pid of procs()) process.kill(Number(pid), 'SIGKILL');
      const pause = new Int32Array(new SharedArrayBuffer(4));
      for (const deadline = Date.now() + 2000; procs().length > 0 && Date.now() < deadline; )
        Atomics.wait(pause, 0, 0, 20);
      rmdirSync(path);
    } catch {}
  };
  process.once('exit', onExit);
  try {
    return await work(cgroup);
  } finally {
    process.off('exit', onExit);
    await rmdir(path);
  }
}

/** Runs `argv` in `cgroup` (stderr passed through) and resolves once it has exited. */
export function runInCgroup(cgroup: CpuCgroup, argv: readonly string[]): Promise<CliResult> {
  const [cmd, ...args] = cgroup.command(argv);
  return outputOf(spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'inherit'] }));
}
