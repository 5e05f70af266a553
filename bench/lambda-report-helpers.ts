/**
 * `npm run bench lambda-duration`'s arithmetic and table: from the timed invocations, the medians
 * per memory size and what they bill at docs/costs.md's reference load.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { lambdaCpuShare } from '../test/support/cpu-cgroup.ts';
import type { InvocationsOutput } from './lambda-invocation-helpers.ts';

/** Lambda duration, arm64, us-east-1 list price (docs/costs.md). */
const PRICE_PER_GB_S = 0.0000133334;
/** docs/costs.md's reference load per host, month and target: one segment a minute, hourly backups. */
const LOAD = { segments: 43_200, scheduledRuns: 4_320, manifestRuns: 720, targets: 2 };

export interface Run extends InvocationsOutput {
  readonly scenario: string;
  readonly memoryMb: number;
  readonly rep: number;
  /** 1-minute load average of this machine when the run started. */
  readonly load: number;
  readonly periods: number;
  readonly throttled: number;
}

/** Removes every object of `bucket` from an s3rver's directory (the next run starts empty). */
export async function emptyBucket(directory: string, bucket: string): Promise<void> {
  const dir = join(directory, bucket);
  for (const entry of await readdir(dir)) await rm(join(dir, entry), { recursive: true, force: true });
}

const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

/** Least squares through (x, y): the intercept and the slope. */
function line(xs: readonly number[], ys: readonly number[]): { intercept: number; slope: number } {
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let sxy = 0;
  let sxx = 0;
  for (const [i, x] of xs.entries()) {
    sxy += (x - mx) * ((ys[i] as number) - my);
    sxx += (x - mx) ** 2;
  }
  const slope = sxy / sxx;
  return { intercept: my - slope * mx, slope };
}

/** Refuses a run whose invocations did not copy everything they were given: its times would flatter. */
export function checkRun(scenario: string, expected: readonly number[], outputs: readonly unknown[]): void {
  if (scenario === 'copy')
    for (const [i, output] of outputs.entries()) {
      const out = output as { copied: number; failed: number };
      if (out.copied !== expected[i] || out.failed !== 0)
        throw new Error(
          `copy batch ${i} copied ${out.copied} of ${expected[i]} objects, ${out.failed} failed`,
        );
    }
  else {
    const out = outputs[0] as { anyLeft: boolean; result: { targets: { objectsCopied: number }[] } };
    const copied = out.result.targets.map((t) => t.objectsCopied);
    if (out.anyLeft || copied.length !== 2 || copied.some((c) => c !== expected[0]))
      throw new Error(
        `the ${scenario} plan step left work (anyLeft ${out.anyLeft}) or copied ${copied.join(', ')} objects per target, not ${expected[0]}`,
      );
  }
}

export interface Figures {
  readonly memoryMb: number;
  /** All-in: the WAL clusters' time over their segments (10 a bundle, as at the reference load). */
  readonly walSegment: number;
  readonly segment: number;
  readonly bundle: number;
  readonly copyCpuSeconds: number;
  readonly backupObject: number;
  readonly planWal: number;
  readonly planBackup: number;
  readonly copyRssMb: number;
  readonly planRssMb: number;
  readonly initSeconds: number;
  readonly load: number;
  /** The copy run's wall time over the same repetition's at the reference size: load moves both alike. */
  readonly copyRatio: number;
}

/** Medians over the repetitions of one memory size; peak RSS is the largest seen. */
export function figuresOf(
  runs: readonly Run[],
  memoryMb: number,
  segments: readonly number[],
  backupObjects: number,
  referenceMb: number,
): Figures {
  const at = (scenario: string) => runs.filter((r) => r.memoryMb === memoryMb && r.scenario === scenario);
  const copies = at('copy');
  const fits = copies.map((r) => line(segments, r.seconds.slice(0, segments.length)));
  const backups = copies.map((r) => median(r.seconds.slice(segments.length)) / backupObjects);
  const all = runs.filter((r) => r.memoryMb === memoryMb);
  const total = (r: Run | undefined) => (r ? sum(r.seconds) : Number.NaN);
  const reference = (rep: number) =>
    runs.find((r) => r.memoryMb === referenceMb && r.scenario === 'copy' && r.rep === rep);
  return {
    copyRatio: median(copies.map((r) => total(r) / total(reference(r.rep)))),
    memoryMb,
    walSegment: median(copies.map((r) => sum(r.seconds.slice(0, segments.length)) / sum(segments))),
    segment: median(fits.map((f) => f.slope)),
    bundle: median(fits.map((f) => f.intercept)),
    backupObject: median(backups),
    planWal: median(at('plan-wal').map((r) => r.seconds[0] as number)),
    planBackup: median(at('plan-backup').map((r) => r.seconds[0] as number)),
    copyCpuSeconds: median(copies.map((r) => r.cpuSeconds)),
    copyRssMb: Math.max(...copies.map((r) => r.maxRssMb)),
    planRssMb: Math.max(...[...at('plan-wal'), ...at('plan-backup')].map((r) => r.maxRssMb)),
    initSeconds: median(all.map((r) => r.initSeconds)),
    load: median(all.map((r) => r.load)),
  };
}

/**
 * GB-s per host and month at `memoryMb`: at 100 hosts and more, batches copy the WAL (segments and
 * bundles, both targets) and each manifest run is a plan step of its own; at one host every run is
 * a plan step (10 settled segments each scheduled run, one backup each manifest run). The measured
 * backup has one object and its manifest; the reference load's third object per backup (2,160 a
 * month per target) is added at the time per backup object, per target.
 */
export function gbSecondsOf(f: Figures): { batches: number; manifestRuns: number; oneHost: number } {
  const gb = f.memoryMb / 1024;
  // 10 segments a bundle, as measured: the all-in time per segment covers the bundles.
  const batches = LOAD.targets * LOAD.segments * f.walSegment * gb;
  const manifestRuns = LOAD.manifestRuns * (f.planBackup + LOAD.targets * f.backupObject) * gb;
  return { batches, manifestRuns, oneHost: LOAD.scheduledRuns * f.planWal * gb + manifestRuns };
}

export function printFigures(
  runs: readonly Run[],
  options: {
    segments: readonly number[];
    backupObjects: number;
    firstByteMs: object;
    /** Pacing per connection and direction, 0 when unpaced. */
    mbPerSecond: number;
    memorySizes: readonly number[];
  },
): void {
  const referenceMb = options.memorySizes.includes(1024) ? 1024 : (options.memorySizes[0] as number);
  const figures = options.memorySizes.map((m) =>
    figuresOf(runs, m, options.segments, options.backupObjects, referenceMb),
  );
  const col = (label: string, cell: (f: Figures) => string) =>
    console.log(`${label.padEnd(38)}${figures.map((f) => cell(f).padStart(12)).join('')}`);
  const s = (v: number, digits = 3) => `${v.toFixed(digits)} s`;
  const usd = (gbS: number) => `$${(gbS * PRICE_PER_GB_S).toFixed(3)}`;
  console.log(`first-byte latency (ms)               ${JSON.stringify(options.firstByteMs)}`);
  console.log(
    `throughput per connection             ${options.mbPerSecond > 0 ? `${options.mbPerSecond} MB/s each way` : 'unpaced'}`,
  );
  console.log(`repetitions                           ${Math.max(...runs.map((r) => r.rep)) + 1} (medians)`);
  col('memory (MB)', (f) => `${f.memoryMb}`);
  col('CPU share (of one vCPU)', (f) => Math.min(1, lambdaCpuShare(f.memoryMb)).toFixed(3));
  col('load average (median of runs)', (f) => f.load.toFixed(1));
  col('per bundled segment, all-in', (f) => s(f.walSegment));
  col('  fitted: per segment', (f) => s(f.segment));
  col('  fitted: per bundle', (f) => s(f.bundle));
  col(`copy run's time / ${referenceMb} MB's, same rep`, (f) => f.copyRatio.toFixed(2));
  col('per backup object (4 MiB)', (f) => s(f.backupObject));
  col('plan step, 1 host, 10 segments', (f) => s(f.planWal, 2));
  col('plan step, 1 host, one backup', (f) => s(f.planBackup, 2));
  col('batch of 200 segments, 20 bundles', (f) => s(200 * f.walSegment, 1));
  col('handler CPU, whole copy run', (f) => s(f.copyCpuSeconds, 1));
  col('handler load (cold start init)', (f) => s(f.initSeconds, 2));
  col('peak RSS, copy batch', (f) => `${f.copyRssMb.toFixed(0)} MB`);
  col('peak RSS, plan step', (f) => `${f.planRssMb.toFixed(0)} MB`);
  col('GB-s/host/month: batches, 2 targets', (f) => gbSecondsOf(f).batches.toFixed(0));
  col('GB-s/host/month: manifest runs', (f) => gbSecondsOf(f).manifestRuns.toFixed(0));
  col('GB-s/host/month: 1 host (plan steps)', (f) => gbSecondsOf(f).oneHost.toFixed(0));
  col('$/host/month, 100+ hosts', (f) => usd(gbSecondsOf(f).batches + gbSecondsOf(f).manifestRuns));
  col('$/host/month, 1 host', (f) => usd(gbSecondsOf(f).oneHost));
  console.log(
    'emulated on this machine (cgroup CPU quota, proxy first-byte latency and pacing, s3rver on tmpfs over plain HTTP), not measured in AWS',
  );
}
