// The fault proxy's first-byte latency, which `npm run bench lambda-duration` puts in front of each
// s3rver as in-region S3's: an answer of a named method comes no sooner than the delay, others untouched.
import { Readable } from 'node:stream';
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
