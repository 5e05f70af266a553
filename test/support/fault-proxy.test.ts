// The fault proxy's first-byte latency and pacing, which `npm run bench lambda-duration` puts in front
// of each s3rver as in-region S3's: an answer of a named method comes no sooner than the delay, others
// untouched, and a body, either way, takes no less than its size over the rate.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts';
import { type S3Server, s3rverStorage, startS3Server } from './s3-server.ts';

let server: S3Server;
let proxy: FaultProxy;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['b'] });
  proxy = await startFaultProxy(server.endpoint);
});
afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
});

/** Milliseconds `work` took. */
async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return performance.now() - start;
}

describe('fault proxy first-byte latency', () => {
  it('delays each answer of a named method by at least its time, and no other method', async () => {
    const storage = s3rverStorage(proxy.endpoint, 'b');
    await storage.put('k', Readable.from([Buffer.from('body')]));
    proxy.set({ firstByteMs: { PUT: 300, GET: 200 } });
    // Timers may fire a millisecond early; nothing else can make an answer come sooner.
    expect(await timed(() => storage.put('k2', Readable.from([Buffer.from('body')])))).toBeGreaterThanOrEqual(
      299,
    );
    expect(await timed(async () => (await storage.get('k')).resume())).toBeGreaterThanOrEqual(199);
    expect(proxy.counts.delayed).toBe(2);
    await storage.head('k');
    expect(proxy.counts.delayed).toBe(2);
  });
});

describe('fault proxy pacing', () => {
  it('passes a body, up and down, no faster than bytesPerSecond, and intact', async () => {
    const storage = s3rverStorage(proxy.endpoint, 'b');
    const body = randomBytes(1024 * 1024);
    // 2 MB/s: 1 MiB takes at least 524 ms each way, far above what loopback needs unpaced.
    const bytesPerSecond = 2e6;
    const least = (body.length / bytesPerSecond) * 1000;
    proxy.set({ bytesPerSecond });
    expect(await timed(() => storage.put('paced', Readable.from([body])))).toBeGreaterThanOrEqual(least - 1);
    let read: Buffer | undefined;
    expect(
      await timed(async () => {
        read = await buffer(await storage.get('paced'));
      }),
    ).toBeGreaterThanOrEqual(least - 1);
    expect(read?.equals(body)).toBe(true);
    proxy.set({});
    // Unpaced, the same body comes back in well under the paced time: the pacing is the proxy's.
    expect(await timed(async () => buffer(await storage.get('paced')))).toBeLessThan(least);
  });
});
