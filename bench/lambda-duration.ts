/**
 * What replication's Lambdas bill, emulated as closely as this machine allows, per memory size
 * (BENCH_MEMORY_MB, default 256,512,1024,1769), BENCH_REPS repetitions each (default 3; medians):
 *
 * - CPU as Lambda gives it: the handlers run in a child process in a cgroup whose CPU quota is
 *   memory / 1,769 MB of one CPU (test/support/cpu-cgroup.ts); no cgroup, no figures. The child's
 *   heap has the limits Lambda's Node.js runtime sets for the memory size; memory is not capped.
 * - In-region S3's first-byte latency: a proxy in front of each s3rver holds each answer's first
 *   bytes BENCH_GET_MS (GET, HEAD; default 20) or BENCH_PUT_MS (PUT, POST, DELETE; default 30).
 * - In-region S3's throughput per connection: the same proxy paces each body, both directions, to
 *   BENCH_MB_PER_S (MB = 10^6 bytes; default 85, the low end of what S3's performance guide gives
 *   one request; 0 for unpaced).
 * - No disk of this machine: the s3rvers keep their data on tmpfs (/dev/shm), so their own disk
 *   I/O, which no provider adds to a request, is not measured.
 * - The work production does, bundled (`walBundles` on): ingest holds 10 clusters of 1 to 19 new
 *   segments (100 in all, 3.75 MB on average, random bytes) and 3 clusters with a base backup
 *   (one 4 MiB object and a manifest); the real planner plans them for dr-aws and the real
 *   "Copy batch to target" task copies each cluster's batch, one invocation per cluster. The WAL
 *   clusters' time over their segments is the all-in time per segment (10 to a bundle, as at the
 *   reference load); a straight line through (segments, seconds) splits it into per segment
 *   (slope) and per bundle (intercept), which only a quiet machine makes stable. The plan step ("Plan and copy every target") of a 1-host run copies its small plan
 *   itself to both targets: 10 settled segments (a scheduled run), or one backup (a manifest run).
 *
 * BENCH_RAW=<file> also writes every run's figures there as JSON.
 *
 * Printed: per memory size the medians, peak RSS, and the GB-s and $ per host and month they
 * imply at the reference load of docs/costs.md. Emulated, not measured in AWS.
 */
import { randomBytes } from 'node:crypto';
import { rmSync, statfsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { baseBackupKey, manifestKey, replicationCursorKey, walKey } from '../core/keys.ts';
import { serializeManifest } from '../core/manifest.ts';
import type { PipelineEnv } from '../lambdas/lib/pipeline-env.ts';
import { planCopies } from '../lambdas/replication/plan-copies.ts';
import type { CopyBatch } from '../lambdas/replication/types.ts';
import { lambdaCpuShare, runInCgroup, withCpuCgroup } from '../test/support/cpu-cgroup.ts';
import { type FaultProxy, startFaultProxy } from '../test/support/fault-proxy.ts';
import { localPipelineEnv } from '../test/support/local-pipeline.ts';
import { NODE } from '../test/support/pgkeep-cli.ts';
import { s3rverStorage, startS3Server, useS3rverCredentials } from '../test/support/s3-server.ts';
import { backupIdAt, cursorsAt, sha256, walName } from '../test/support/seeded-archive.ts';
import { manifestOf } from '../test/support/test-manifests.ts';
import {
  type Invocation,
  type InvocationsInput,
  type InvocationsOutput,
  lambdaHeapFlags,
} from './lambda-invocation-helpers.ts';
import { checkRun, emptyBucket, printFigures, type Run } from './lambda-report-helpers.ts';

const MB = 1e6;
const MIB = 1024 * 1024;
/** New segments per WAL cluster: 100 in all, 10 on average, spread so a line can be fitted. */
const SEGMENTS = [10, 1, 4, 7, 13, 16, 19, 10, 10, 10];
const WAL_CLUSTERS = SEGMENTS.map((_, i) => `wal-${i}`);
const BACKUP_CLUSTERS = ['backup-0', 'backup-1', 'backup-2'];
const BACKUP_OBJECT_BYTES = 4 * MIB;
/** The 1-host runs: a scheduled one (10 settled segments) and one started by a manifest. */
const SOLO_WAL = 'solo-wal';
const SOLO_BACKUP = 'solo-backup';
const CLUSTERS = [...WAL_CLUSTERS, ...BACKUP_CLUSTERS, SOLO_WAL, SOLO_BACKUP];
/** Segments are numbered from here on; the cursors stand just before. */
const FIRST = 101;
const SETTLED_MS = 20 * 60 * 1000;
const buckets = { drAws: 'dr', b2: 'offsite' };

const memorySizes = (process.env.BENCH_MEMORY_MB ?? '256,512,1024,1769').split(',').map(Number);
const reps = Number(process.env.BENCH_REPS ?? 3);
const getMs = Number(process.env.BENCH_GET_MS ?? 20);
const putMs = Number(process.env.BENCH_PUT_MS ?? 30);
const firstByteMs = { GET: getMs, HEAD: getMs, PUT: putMs, POST: putMs, DELETE: putMs };
const mbPerSecond = Number(process.env.BENCH_MB_PER_S ?? 85);
/** Where the s3rvers keep their data: memory, not this machine's disk. */
const TMPFS = '/dev/shm';
const TMPFS_MAGIC = 0x01021994;

/** Production's batch settings (deploy config defaults), bundles on at both targets. */
function pipelineEnv(clusters: readonly string[]): PipelineEnv {
  const base = localPipelineEnv(clusters, buckets);
  return {
    ...base,
    batchSize: 200,
    maxBatchesPerRun: 40,
    largeObjectBytes: undefined,
    copyPartBytes: undefined,
    partsPerInvocation: undefined,
    targets: base.targets.map((t) => ({ ...t, walBundles: true })),
  } as PipelineEnv;
}

/** 3.75 MB on average, from 1.5 to 6 MB: the compressed WAL segment docs/costs.md assumes. */
const segmentBytes = (i: number) => Math.round((1.5 + (4.5 * ((i * 7) % 11)) / 10) * MB);

async function main(): Promise<void> {
  if (!memorySizes.every((m) => m >= 128 && m <= 10240) || !(reps >= 1))
    throw new Error(
      `BENCH_MEMORY_MB=${process.env.BENCH_MEMORY_MB} / BENCH_REPS=${process.env.BENCH_REPS} are not memory sizes of 128 to 10240 MB and a count of at least 1`,
    );
  if (!(getMs >= 0 && putMs >= 0))
    throw new Error(
      `BENCH_GET_MS=${process.env.BENCH_GET_MS} / BENCH_PUT_MS=${process.env.BENCH_PUT_MS} are not milliseconds (0 or more); leave them unset for 20 and 30`,
    );
  if (!(mbPerSecond >= 0))
    throw new Error(
      `BENCH_MB_PER_S=${process.env.BENCH_MB_PER_S} is not a throughput in MB/s (0 for unpaced); leave it unset for 85`,
    );
  let onTmpfs = false;
  try {
    onTmpfs = statfsSync(TMPFS).type === TMPFS_MAGIC;
  } catch {}
  if (!onTmpfs)
    throw new Error(
      `${TMPFS} is not a tmpfs here; the s3rvers' data must be in memory, or their disk is what is measured (mount one: mount -t tmpfs tmpfs ${TMPFS})`,
    );
  // Unconfined figures would be wrong, not merely less exact: refuse before any work.
  await withCpuCgroup('pgkeep-bench', 1, async () => {});
  useS3rverCredentials();
  const data = await mkdtemp(join(TMPFS, 'pgkeep-bench-'));
  // Interrupted, the bench exits without its finally: the data, in memory, must not stay behind.
  const removeData = () => rmSync(data, { recursive: true, force: true });
  process.once('exit', removeData);
  const servers = await Promise.all([
    startS3Server({ buckets: ['ingest'], directory: join(data, 'ingest') }),
    startS3Server({
      buckets: [buckets.drAws, buckets.b2],
      conditionalWrites: true,
      directory: join(data, 'targets'),
    }),
  ]).catch((error) => {
    removeData();
    throw error;
  });
  const [ingestServer, targetServer] = servers;
  const proxies: FaultProxy[] = [];
  try {
    const ingestProxy = await startFaultProxy(ingestServer.endpoint);
    const targetProxy = await startFaultProxy(targetServer.endpoint);
    proxies.push(ingestProxy, targetProxy);
    const ingest = s3rverStorage(ingestServer.endpoint, 'ingest');
    process.stderr.write('seeding ingest...\n');
    const put = (key: string, body: Buffer | string) => ingest.put(key, Readable.from([body]));
    let n = 0;
    for (const [c, cluster] of [...WAL_CLUSTERS, SOLO_WAL].entries())
      for (let i = 0; i < (SEGMENTS[c] ?? 10); i++) {
        const body = randomBytes(segmentBytes(n++));
        await put(walKey(cluster, walName(FIRST + i), sha256(body)), body);
      }
    for (const cluster of [...BACKUP_CLUSTERS, SOLO_BACKUP]) {
      const id = backupIdAt(FIRST);
      const objects = [
        {
          key: baseBackupKey(cluster, id, 'base'),
          role: 'base' as const,
          body: randomBytes(BACKUP_OBJECT_BYTES),
        },
      ];
      for (const o of objects) await put(o.key, o.body);
      const range = { startWalFile: walName(FIRST), stopWalFile: walName(FIRST) };
      await put(
        manifestKey(cluster, id),
        serializeManifest(manifestOf(cluster, id, new Date().toISOString(), objects, range)),
      );
    }
    const resetCursors = async () => {
      for (const target of ['dr-aws', 'b2'])
        await put(replicationCursorKey(target), JSON.stringify(cursorsAt(CLUSTERS, FIRST - 1)));
    };
    await resetCursors();
    const nowMs = Date.now() + SETTLED_MS;
    // The batches the real planner makes for the copy clusters (planned once, unmeasured).
    const copyEnv = pipelineEnv([...WAL_CLUSTERS, ...BACKUP_CLUSTERS]);
    const plan = await planCopies(
      { target: 'dr-aws' },
      copyEnv,
      {
        ingest: async () => ({ name: 'ingest', storage: ingest }),
        target: async (t) => ({ name: t.name, storage: s3rverStorage(targetServer.endpoint, buckets.drAws) }),
      },
      {},
      new Date(nowMs),
    );
    const batches = plan.batches.flatMap((b) => (Array.isArray(b) ? b : [b])) as CopyBatch[];
    const order = [...WAL_CLUSTERS, ...BACKUP_CLUSTERS];
    batches.sort((a, b) => order.indexOf(a.cluster) - order.indexOf(b.cluster));
    if (batches.length !== order.length || plan.done)
      throw new Error(
        `the planner made ${batches.length} batches (done: ${plan.done}); expected one per cluster, ${order.length}`,
      );
    const bytesPerSecond = mbPerSecond > 0 ? mbPerSecond * MB : undefined;
    ingestProxy.set({ firstByteMs, bytesPerSecond });
    targetProxy.set({ firstByteMs, bytesPerSecond });
    const targets = {
      'dr-aws': { endpoint: targetProxy.endpoint, bucket: buckets.drAws },
      b2: { endpoint: targetProxy.endpoint, bucket: buckets.b2 },
    };
    const scenarios = {
      copy: {
        expected: batches.map((b) => b.count),
        env: copyEnv,
        invocations: batches.map((batch) => ({
          handler: 'replication/copy-batch',
          input: { target: 'dr-aws', batch },
        })),
      },
      'plan-wal': {
        expected: [10],
        env: pipelineEnv([SOLO_WAL]),
        invocations: [{ handler: 'replication/plan-copies', input: { targets: ['dr-aws', 'b2'] } }],
      },
      'plan-backup': {
        expected: [1],
        env: pipelineEnv([SOLO_BACKUP]),
        invocations: [
          {
            handler: 'replication/plan-copies',
            input: {
              targets: ['dr-aws', 'b2'],
              execution: { key: manifestKey(SOLO_BACKUP, backupIdAt(FIRST)) },
            },
          },
        ],
      },
    } satisfies Record<string, { expected: number[]; env: PipelineEnv; invocations: Invocation[] }>;
    const runs: Run[] = [];
    for (let rep = 0; rep < reps; rep++)
      for (const memoryMb of memorySizes)
        for (const [scenario, { expected, env, invocations }] of Object.entries(scenarios)) {
          await resetCursors();
          for (const bucket of Object.values(buckets)) await emptyBucket(targetServer.directory, bucket);
          const input: InvocationsInput = { ingest: ingestProxy.endpoint, targets, env, nowMs, invocations };
          const load = loadavg()[0] as number;
          const share = Math.min(1, lambdaCpuShare(memoryMb));
          const out = await withCpuCgroup('pgkeep-bench', share, async (cgroup) => {
            const child = await runInCgroup(cgroup, [
              NODE,
              ...lambdaHeapFlags(memoryMb),
              `${import.meta.dirname}/lambda-invocation-helpers.ts`,
              '--invoke',
              JSON.stringify(input),
            ]);
            if (child.code !== 0)
              throw new Error(`the ${scenario} process at ${memoryMb} MB exited with code ${child.code}`);
            const output = JSON.parse(child.stdout) as InvocationsOutput;
            checkRun(scenario, expected, output.outputs);
            return { ...output, ...(await cgroup.throttling()) };
          });
          runs.push({ scenario, memoryMb, rep, load, ...out });
          process.stderr.write(
            `${scenario} ${memoryMb} MB rep ${rep + 1}: ${out.seconds.reduce((a, b) => a + b, 0).toFixed(1)} s, load ${load.toFixed(1)}, throttled ${out.throttled} of ${out.periods} periods\n`,
          );
        }
    // Every run's figures, for a second look without running again.
    if (process.env.BENCH_RAW) await writeFile(process.env.BENCH_RAW, JSON.stringify(runs));
    printFigures(runs, { segments: SEGMENTS, backupObjects: 1, firstByteMs, mbPerSecond, memorySizes });
  } finally {
    await Promise.all(proxies.map((p) => p.stop()));
    await Promise.all([ingestServer.stop(), targetServer.stop()]);
    removeData();
    process.off('exit', removeData);
  }
}

// Interrupted, the process still exits through its exit handlers (the cgroup's removal among them).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
await main();
