/**
 * What one "Copy batch to target" invocation costs per copied WAL segment: the real handler
 * (lambdas/replication/copy-batch.ts, `copyBatch`) copies BENCH_SEGMENTS (default 200, the
 * deployed batch size; also run with 10) 16 MiB segments, named as the hot path names them, from
 * an s3rver ingest to an s3rver target that honours If-None-Match, both on 127.0.0.1, one object
 * after another as the handler does. The copy runs in a child process (the "Lambda"), so its CPU
 * time (process.cpuUsage, user + system) and peak RSS are the handler's alone; the servers run in
 * other processes.
 *
 * Printed: wall and CPU seconds per copy, peak RSS, and the GB-s per copy they imply at the
 * function's 512 MB. Local wall time is not Lambda time (no TLS here, the servers share the
 * machine's cores); CPU time is the honest part: at 512 MB a function has ~0.29 of a vCPU
 * (1,769 MB buys one), so CPU seconds / 0.29 is the least a CPU-bound copy can bill.
 * `npm run bench lambda-duration` emulates Lambda's CPU share and S3's latency instead.
 * BENCH_LAMBDAS_ROOT points at another checkout's root to measure its handler instead.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { walKey } from '../core/keys.ts';
import { createS3Client } from '../storage/s3-storage.ts';
import { lambdaCpuShare } from '../test/support/cpu-cgroup.ts';
import { localPipelineEnv } from '../test/support/local-pipeline.ts';
import { s3rverStorage, startS3Server, useS3rverCredentials } from '../test/support/s3-server.ts';
import { sha256, walName } from '../test/support/seeded-archive.ts';

const MIB = 1024 * 1024;
const SEGMENT = 16 * MIB;
const CLUSTER = 'bench';
/** The deployed CopyBatch function's memory (cdk/constructs/replication.ts). */
const MEMORY_MB = 512;

interface ChildInput {
  readonly ingest: string;
  readonly target: string;
  readonly keys: string[];
  readonly root: string;
}

interface ChildOutput {
  readonly wallSeconds: number;
  readonly cpuSeconds: number;
  readonly maxRssMb: number;
  readonly copied: number;
  readonly failed: number;
}

async function runBatch(input: ChildInput): Promise<ChildOutput> {
  const { copyBatch } = (await import(
    pathToFileURL(join(input.root, 'lambdas/replication/copy-batch.ts')).href
  )) as typeof import('../lambdas/replication/copy-batch.ts');
  const ingest = { name: 'ingest', storage: s3rverStorage(input.ingest, 'ingest') };
  const target = { name: 'dr-aws', storage: s3rverStorage(input.target, 'dr'), conditionalWrites: true };
  const env = {
    ...localPipelineEnv([CLUSTER], { drAws: 'dr', b2: 'dr' }),
    batchSize: 200,
    copyPartBytes: 16 * MIB,
    largeObjectBytes: 1024 * MIB,
  };
  const keys = input.keys;
  const batch = { cluster: CLUSTER, firstKey: keys[0]!, lastKey: keys.at(-1)!, count: keys.length, keys };
  const cpu = process.cpuUsage();
  const start = performance.now();
  const out = await copyBatch({ target: 'dr-aws', batch }, env, {
    ingest: async () => ingest,
    target: async () => target,
  });
  const wallSeconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    wallSeconds,
    cpuSeconds: (used.user + used.system) / 1e6,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    copied: out.copied,
    failed: out.failed,
  };
}

async function main(): Promise<void> {
  const count = Number(process.env.BENCH_SEGMENTS ?? 200);
  const root = process.env.BENCH_LAMBDAS_ROOT ?? join(import.meta.dirname, '..');
  useS3rverCredentials();
  const [ingestServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['dr'], conditionalWrites: true }),
  ]);
  try {
    process.stderr.write(`writing ${count} segments of 16 MiB to ingest...\n`);
    const client = createS3Client({ endpoint: ingestServer.endpoint, forcePathStyle: true });
    const keys: string[] = [];
    for (let i = 1; i <= count; i++) {
      const body = Buffer.alloc(SEGMENT);
      // Incompressible like real (encrypted) objects.
      randomBytes(SEGMENT).copy(body);
      const key = walKey(CLUSTER, walName(i), sha256(body));
      await client.send(
        new PutObjectCommand({ Bucket: 'ingest', Key: `${key}`, Body: body, ContentLength: SEGMENT }),
      );
      keys.push(key);
    }
    client.destroy();
    keys.sort();
    const input: ChildInput = { ingest: ingestServer.endpoint, target: targetServer.endpoint, keys, root };
    const child = spawn(process.execPath, [import.meta.filename, '--batch', JSON.stringify(input)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`copy process exited with code ${code}`);
    const out = JSON.parse(stdout) as ChildOutput;
    if (out.copied !== count || out.failed !== 0)
      throw new Error(`copied ${out.copied} of ${count} segments, ${out.failed} failed`);
    const gb = MEMORY_MB / 1024;
    const perCopy = (s: number) => s / count;
    const share = lambdaCpuShare(MEMORY_MB);
    console.log(`handler           ${root}`);
    console.log(`segments          ${count} × 16 MiB, one after another (as the handler copies)`);
    console.log(
      `wall              ${out.wallSeconds.toFixed(1)} s, ${perCopy(out.wallSeconds).toFixed(3)} s per copy, ${((count * SEGMENT) / 1e6 / out.wallSeconds).toFixed(0)} MB/s`,
    );
    console.log(
      `cpu (handler)     ${out.cpuSeconds.toFixed(1)} s, ${perCopy(out.cpuSeconds).toFixed(3)} s per copy`,
    );
    console.log(`peak RSS          ${out.maxRssMb.toFixed(0)} MB`);
    console.log(
      `GB-s per copy     ${(perCopy(out.wallSeconds) * gb).toFixed(3)} at local wall time; ${((perCopy(out.cpuSeconds) / share) * gb).toFixed(3)} if CPU-bound at ${MEMORY_MB} MB (${share.toFixed(2)} vCPU)`,
    );
  } finally {
    await Promise.all([ingestServer.stop(), targetServer.stop()]);
  }
}

if (process.argv[2] === '--batch') {
  useS3rverCredentials();
  const output = await runBatch(JSON.parse(process.argv[3] ?? '{}') as ChildInput);
  process.stdout.write(`${JSON.stringify(output)}\n`);
  process.exit(0);
} else {
  await main();
}
