/**
 * The S3 driver against a real S3-compatible server (s3rver) behind the fault proxy: what each
 * network and server fault does to a put or a get. The promise under test is the storage contract's:
 * a put either stores exactly the bytes given or leaves nothing visible (no object, no open
 * multipart upload), and a get never ends normally with fewer bytes than the object holds.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withRetry } from '../../storage/failure.ts';
import { parseStorageUrl } from '../../storage/open-storage.ts';
import { S3Storage } from '../../storage/s3-storage.ts';
import { ClockSkewError, StorageUnavailableError } from '../../storage/storage.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { type S3Server, startS3Server, useS3rverCredentials } from '../support/s3-server.ts';

useS3rverCredentials();
const MIB = 1024 * 1024;
const SEED = 20261129;

let server: S3Server;
let proxy: FaultProxy;
let count = 0;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['repo'] });
  proxy = await startFaultProxy(server.endpoint, SEED);
});
afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
});

/** A driver that reaches s3rver through the proxy, with short timeouts so a hung request ends quickly. */
function storageThroughProxy(options: { idleTimeoutMs?: number; maxAttempts?: number } = {}): S3Storage {
  count += 1;
  const parsed = parseStorageUrl(
    `s3://repo/f${count}/?endpoint=${proxy.endpoint}&path-style=true&part-size-mib=5&queue-size=2`,
  );
  if (parsed.scheme !== 's3') throw new Error('not s3');
  return new S3Storage({ ...parsed, ...options });
}

/** The same bucket and prefix, straight to the server: what is really stored. */
function direct(storage: S3Storage): S3Storage {
  const parsed = parseStorageUrl(`s3://repo/${storage.prefix}?endpoint=${server.endpoint}&path-style=true`);
  if (parsed.scheme !== 's3') throw new Error('not s3');
  return new S3Storage(parsed);
}

async function readAll(storage: S3Storage, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await storage.get(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function openUploads(storage: S3Storage): Promise<string[]> {
  const listed = await storage.client.send(
    new ListMultipartUploadsCommand({ Bucket: storage.bucket, Prefix: storage.prefix }),
  );
  return (listed.Uploads ?? []).map((u) => u.Key ?? '');
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('S3 storage behind a faulty network', () => {
  it('rides out 500, 503 and SlowDown answers to a share of requests (seeded), storing exact bytes', async () => {
    const storage = storageThroughProxy({ maxAttempts: 6 });
    const before = proxy.counts.errors;
    proxy.set({ rate: 0.3, error: 'SlowDown' });
    try {
      for (let i = 0; i < 6; i++) {
        const body = randomBytes(64 * 1024);
        await storage.put(`k${i}`, Readable.from([body]));
        expect(sha(await readAll(storage, `k${i}`))).toBe(sha(body));
      }
      proxy.set({ rate: 0.3, error: 500 });
      const big = randomBytes(12 * MIB);
      await storage.put('big', Readable.from([big]));
      expect(sha(await readAll(direct(storage), 'big'))).toBe(sha(big));
    } finally {
      proxy.set({});
    }
    expect(proxy.counts.errors - before).toBeGreaterThan(0);
  });

  it('leaves nothing visible when every upload connection is reset mid-body', async () => {
    const storage = storageThroughProxy({ maxAttempts: 2 });
    proxy.set({ method: 'PUT', resetAfterBodyBytes: MIB });
    try {
      await expect(storage.put('reset', Readable.from([randomBytes(12 * MIB)]))).rejects.toBeInstanceOf(
        StorageUnavailableError,
      );
    } finally {
      proxy.set({});
    }
    expect(await direct(storage).head('reset')).toBeUndefined();
    expect(await openUploads(direct(storage))).toEqual([]);
  });

  it('stores exact bytes when only some part uploads are reset (the parts are retried)', async () => {
    const storage = storageThroughProxy({ maxAttempts: 5 });
    const body = randomBytes(16 * MIB);
    const resetsBefore = proxy.counts.resets;
    proxy.set({ method: 'PUT', rate: 0.3, resetAfterBodyBytes: 256 * 1024 });
    try {
      await storage.put('partly-reset', Readable.from([body]));
    } finally {
      proxy.set({});
    }
    expect(sha(await readAll(direct(storage), 'partly-reset'))).toBe(sha(body));
    expect(proxy.counts.resets).toBeGreaterThan(resetsBefore);
  });

  it('fails a get whose response body is cut short, never ending it as if complete', async () => {
    const storage = storageThroughProxy({ maxAttempts: 1 });
    await direct(storage).put('cut', Readable.from([randomBytes(4 * MIB)]));
    proxy.set({ method: 'GET', truncateResponseAfterBytes: MIB });
    try {
      await expect(readAll(storage, 'cut')).rejects.toThrow();
    } finally {
      proxy.set({});
    }
    expect(proxy.counts.truncated).toBeGreaterThan(0);
  });

  it('ends a blackholed request within its idle timeout and attempts, as unavailable', async () => {
    const storage = storageThroughProxy({ idleTimeoutMs: 1000, maxAttempts: 2 });
    proxy.set({ blackhole: true });
    const started = Date.now();
    try {
      await expect(storage.put('hole', Readable.from([Buffer.from('x')]))).rejects.toBeInstanceOf(
        StorageUnavailableError,
      );
      await expect(storage.head('hole')).rejects.toBeInstanceOf(StorageUnavailableError);
    } finally {
      proxy.set({});
    }
    // Two operations, each at most 2 attempts of 1 s idle time, plus backoff.
    expect(Date.now() - started).toBeLessThan(12_000);
    expect(await direct(storage).head('hole')).toBeUndefined();
  });

  it('fails at once on RequestTimeTooSkewed, naming the clock, without retrying it for minutes', async () => {
    const storage = storageThroughProxy();
    proxy.set({ error: 'RequestTimeTooSkewed' });
    const before = proxy.counts.errors;
    try {
      const error = await withRetry(
        'reading skew',
        { deadlineMs: 30_000, initialDelayMs: 100, maxDelayMs: 1000 },
        () => storage.get('skew'),
      ).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ClockSkewError);
      expect((error as Error).message).toMatch(/this host's clock \(.*\) is too far from its own/);
    } finally {
      proxy.set({});
    }
    // The SDK's own attempts (it corrects its clock offset once), never the 30 s retry deadline.
    expect(proxy.counts.errors - before).toBeLessThanOrEqual(3);
  });

  it('still succeeds with added latency', async () => {
    const storage = storageThroughProxy();
    proxy.set({ latencyMs: 300 });
    try {
      await storage.put('slow', Readable.from([Buffer.from('slow but sure')]));
      expect((await readAll(storage, 'slow')).toString()).toBe('slow but sure');
      // The proxy tells listings from object requests, so tests can count what a run lists.
      const lists = proxy.counts.lists;
      const keys: string[] = [];
      for await (const o of storage.list('')) keys.push(o.key);
      expect(keys).toEqual(['slow']);
      expect(proxy.counts.lists).toBe(lists + 1);
    } finally {
      proxy.set({});
    }
  });
});
