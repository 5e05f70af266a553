/**
 * Replication copy throughput and memory: copyObject (lambdas/lib/s3-copy.ts) moves one large
 * object between two local S3-compatible servers (two s3rver processes on 127.0.0.1), then
 * verifyCopy reads the copy back and hashes it.
 *
 * Target (issue 5): the copy's peak RSS under 256 MB whatever the object size.
 * BENCH_COPY_MIB sets the object size (default 2048 = 2 GiB); BENCH_PART_MIB the part size
 * (default 16); BENCH_CONCURRENCY the parts in flight (default 4).
 *
 * BENCH_MODE=fanout copies it the way the state machine copies an object above the large-object
 * threshold: startCopy, then copyParts for batches of BENCH_PARTS_PER_INVOCATION (default 16)
 * parts (each batch one "Copy part range" Lambda; here one after another in one process, so the
 * peak RSS is that of the hungriest batch or more), then completeCopy.
 *
 * The object is made from a deterministic pseudo-random stream (AES-CTR keystream), so no large
 * buffer is ever held; the copy runs in a child process so its peak RSS
 * (process.resourceUsage().maxRSS) is the copy's alone. The servers' data is removed at the end.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { completeCopy, copyObject, copyParts, partNumberBatches, startCopy } from '../lambdas/lib/s3-copy.ts';
import { verifyCopy } from '../lambdas/lib/verify-copy.ts';
import { createS3Client } from '../storage/s3-storage.ts';
import { startS3Server, useS3rverCredentials } from '../test/support/s3-server.ts';

const MIB = 1024 * 1024;
const KEY = 'v1/bench/base/20261122T000000Z-0000/base.tar.zst.age';

interface ChildInput {
  readonly source: string;
  readonly target: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly partSizeBytes: number;
  readonly concurrency: number;
  readonly mode: 'object' | 'fanout';
  readonly partsPerInvocation: number;
}

interface ChildOutput {
  readonly copySeconds: number;
  readonly verifySeconds: number;
  readonly sha256: string;
  readonly verification: string;
  /** Peak RSS by the end of the copy, before the verification read. */
  readonly copyMaxRssMb: number;
  readonly maxRssMb: number;
}

/** `sizeBytes` of AES-128-CTR keystream: fast, deterministic, incompressible. */
function pseudoRandom(sizeBytes: number, onChunk: (chunk: Buffer) => void): Readable {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(MIB);
  let left = sizeBytes;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, MIB);
      left -= n;
      const chunk = cipher.update(zeros.subarray(0, n));
      onChunk(chunk);
      this.push(chunk);
    },
  });
}

function client(endpoint: string) {
  // Completing a 2 GiB multipart upload makes s3rver concatenate every part before it answers.
  return createS3Client({ endpoint, forcePathStyle: true, idleTimeoutMs: 300_000 });
}

async function runCopy(input: ChildInput): Promise<ChildOutput> {
  const source = { client: client(input.source), bucket: 'ingest', key: KEY };
  const target = { client: client(input.target), bucket: 'target', key: KEY };
  const expected = { sizeBytes: input.sizeBytes, sha256: input.sha256 };
  const copyStart = performance.now();
  let result: { sha256: string };
  if (input.mode === 'fanout') {
    const state = await startCopy(source, target, { partSizeBytes: input.partSizeBytes });
    const parts = [];
    for (const batch of partNumberBatches(state, input.partsPerInvocation))
      parts.push(...(await copyParts(source, target, state, batch, { concurrency: input.concurrency })));
    await completeCopy(target, state, parts);
    // The fan-out does not hash while copying: "Complete large copy" verifies the copy (below).
    result = { sha256: input.sha256 };
  } else {
    result = await copyObject(source, target, {
      partSizeBytes: input.partSizeBytes,
      concurrency: input.concurrency,
      expected,
    });
  }
  const copySeconds = (performance.now() - copyStart) / 1000;
  // maxRSS is in kilobytes.
  const copyMaxRssMb = process.resourceUsage().maxRSS / 1024;
  const verifyStart = performance.now();
  const verification = await verifyCopy(target, expected);
  const verifySeconds = (performance.now() - verifyStart) / 1000;
  return {
    copySeconds,
    verifySeconds,
    sha256: result.sha256,
    verification: verification.status,
    copyMaxRssMb,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
  };
}

async function main(): Promise<void> {
  const sizeBytes = Number(process.env.BENCH_COPY_MIB ?? 2048) * MIB;
  const partSizeBytes = Number(process.env.BENCH_PART_MIB ?? 16) * MIB;
  const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 4);
  const mode = process.env.BENCH_MODE === 'fanout' ? 'fanout' : 'object';
  const partsPerInvocation = Number(process.env.BENCH_PARTS_PER_INVOCATION ?? 16);
  useS3rverCredentials();
  const [sourceServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['target'] }),
  ]);
  try {
    process.stderr.write(`writing a ${sizeBytes / MIB} MiB pseudo-random object to the source server...\n`);
    const hash = createHash('sha256');
    const sourceClient = client(sourceServer.endpoint);
    await sourceClient.send(
      new PutObjectCommand({
        Bucket: 'ingest',
        Key: KEY,
        ContentLength: sizeBytes,
        Body: pseudoRandom(sizeBytes, (chunk) => hash.update(chunk)),
      }),
    );
    const sha256 = hash.digest('hex');
    sourceClient.destroy();

    process.stderr.write(`copying with ${partSizeBytes / MIB} MiB parts, concurrency ${concurrency}...\n`);
    const input: ChildInput = {
      source: sourceServer.endpoint,
      target: targetServer.endpoint,
      sizeBytes,
      sha256,
      partSizeBytes,
      concurrency,
      mode,
      partsPerInvocation,
    };
    const child = spawn(process.execPath, [import.meta.filename, '--copy', JSON.stringify(input)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`copy process exited with code ${code}`);
    const out = JSON.parse(stdout) as ChildOutput;

    const targetClient = client(targetServer.endpoint);
    const head = await targetClient.send(new HeadObjectCommand({ Bucket: 'target', Key: KEY }));
    targetClient.destroy();
    if (head.ContentLength !== sizeBytes || out.sha256 !== sha256 || out.verification !== 'ok') {
      throw new Error(
        `copy is wrong: ${head.ContentLength} bytes, sha256 ${out.sha256}, verification ${out.verification}`,
      );
    }
    const mb = sizeBytes / 1e6;
    console.log(
      `mode              ${mode === 'fanout' ? `fan-out (startCopy, copyParts × ${partsPerInvocation} parts, completeCopy)` : 'copyObject (one invocation, hashed while streaming)'}`,
    );
    console.log(
      `object            ${(sizeBytes / MIB).toFixed(0)} MiB (${(sizeBytes / 1e9).toFixed(2)} GB), ${partSizeBytes / MIB} MiB parts, concurrency ${concurrency} (fewer when parts outgrow the 32 MiB hash buffer)`,
    );
    console.log(
      `copy              ${out.copySeconds.toFixed(1)} s  ${(mb / out.copySeconds).toFixed(1)} MB/s`,
    );
    console.log(
      `verify (read)     ${out.verifySeconds.toFixed(1)} s  ${(mb / out.verifySeconds).toFixed(1)} MB/s`,
    );
    console.log(`peak RSS copy     ${out.copyMaxRssMb.toFixed(0)} MB (target: < 256 MB)`);
    console.log(`peak RSS + verify ${out.maxRssMb.toFixed(0)} MB`);
    if (out.maxRssMb >= 256) process.exitCode = 1;
  } finally {
    await Promise.all([sourceServer.stop(), targetServer.stop()]);
  }
}

if (process.argv[2] === '--copy') {
  useS3rverCredentials();
  const output = await runCopy(JSON.parse(process.argv[3] ?? '{}') as ChildInput);
  process.stdout.write(`${JSON.stringify(output)}\n`);
  process.exit(0);
} else {
  await main();
}
