/**
 * How "Copy batch to target" reads a bundle's members from ingest: one GET each, no HEAD, when the
 * plan's listing gave their sizes (the GET's length and the provider's checksum in its answer are
 * checked while the bundle streams); a HEAD first when the batch has no sizes (a plan made before
 * sizes were carried). Real s3rvers on 127.0.0.1, ingest behind a counting proxy that can also add
 * the checksum header a provider sends (s3rver computes none).
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walKey } from '../../../core/keys.ts';
import { walBundlesPrefix } from '../../../core/wal-bundle.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { copyBatch } from '../../../lambdas/replication/copy-batch.ts';
import { readStoredPlan, storePlan } from '../../../lambdas/replication/cursors.ts';
import type { CopyBatch } from '../../../lambdas/replication/types.ts';
import { WalBundleStorage } from '../../../storage/wal-bundles.ts';
import { readAll } from '../../storage/storage-contract.ts';
import { type FaultProxy, startFaultProxy } from '../../support/fault-proxy.ts';
import { localPipelineEnv } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { sha256, walName } from '../../support/seeded-archive.ts';

const CLUSTER = 'app';
let server: S3Server;
let proxy: FaultProxy;
let ingest: Location;
let target: Location;
let locations: LocationFactory;
let env: PipelineEnv;
let next = 1;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'offsite'] });
  proxy = await startFaultProxy(server.endpoint);
  const base = localPipelineEnv([CLUSTER], { drAws: 'dr', b2: 'offsite' });
  env = { ...base, targets: base.targets.map((t) => ({ ...t, walBundles: true })) };
  ingest = { name: 'ingest', storage: s3rverStorage(proxy.endpoint, 'ingest') };
  target = { name: 'b2', storage: s3rverStorage(server.endpoint, 'offsite') };
  locations = { ingest: async () => ingest, target: async () => target };
});

afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
});

/** `count` new segments in ingest, as a host pushes them. */
async function segments(count: number): Promise<{ keys: string[]; bodies: Buffer[] }> {
  const keys: string[] = [];
  const bodies: Buffer[] = [];
  for (let i = 0; i < count; i++, next++) {
    const body = randomBytes(5_000 + i);
    const key = walKey(CLUSTER, walName(next), sha256(body));
    await ingest.storage.put(key, Readable.from([body]));
    keys.push(key);
    bodies.push(body);
  }
  return { keys, bodies };
}

/** The batch a plan hands over for `keys`, all settled; with `sizes`, the sizes its listing gave. */
function plannedBatch(keys: string[], sizes?: number[]): CopyBatch {
  const last = keys[keys.length - 1] as string;
  return {
    cluster: CLUSTER,
    firstKey: keys[0] as string,
    lastKey: last,
    count: keys.length,
    keys,
    bundleThrough: { '00000001': last },
    ...(sizes ? { listing: { sizes, oldest: new Date().toISOString() } } : {}),
  };
}

async function bundleKeys(): Promise<string[]> {
  const found: string[] = [];
  for await (const o of target.storage.list(walBundlesPrefix(CLUSTER))) found.push(o.key);
  return found;
}

/** Runs `copy` and returns its result with the HEAD and GET requests ingest answered meanwhile. */
async function counted<T>(copy: () => Promise<T>) {
  const before = { ...proxy.operations };
  const result = await copy();
  const delta = (op: string) => (proxy.operations[op] ?? 0) - (before[op] ?? 0);
  return { result, heads: delta('HEAD'), gets: delta('GET') };
}

const sizesOf = (bodies: Buffer[]) => bodies.map((b) => b.length);

describe('reading bundle members from ingest', () => {
  it('with the listed sizes one GET per member and no HEAD; without them (an older plan) a HEAD each as before', async () => {
    const listed = await segments(3);
    const fast = await counted(() =>
      copyBatch({ target: 'b2', batch: plannedBatch(listed.keys, sizesOf(listed.bodies)) }, env, locations),
    );
    expect(fast).toMatchObject({ result: { copied: 3, failed: 0 }, heads: 0, gets: 3 });
    const old = await segments(3);
    const slow = await counted(() =>
      copyBatch({ target: 'b2', batch: plannedBatch(old.keys) }, env, locations),
    );
    expect(slow).toMatchObject({ result: { copied: 3, failed: 0 }, heads: 3, gets: 3 });
    const reader = new WalBundleStorage(target.storage);
    for (const [i, key] of [...listed.keys, ...old.keys].entries())
      expect(await readAll(await reader.get(key))).toEqual([...listed.bodies, ...old.bodies][i]);
  }, 60_000);

  it('a plan passed by reference keeps the sizes: its batch is copied without a HEAD', async () => {
    const { keys, bodies } = await segments(2);
    const stored = await storePlan(ingest, 'b2', {
      target: 'b2',
      batches: [plannedBatch(keys, sizesOf(bodies))],
      manifestKeys: [],
    });
    expect((await readStoredPlan(ingest, 'b2', stored)).batches[0]).toMatchObject({
      listing: { sizes: sizesOf(bodies) },
    });
    const copied = await counted(() =>
      copyBatch({ target: 'b2', batch: { stored, index: 0 } }, env, locations),
    );
    expect(copied).toMatchObject({ result: { copied: 2, failed: 0 }, heads: 0 });
    await ingest.storage.delete(stored);
  }, 60_000);

  it('a segment that changed after the plan listed it (another size) rejects its bundle before anything is written', async () => {
    const { keys, bodies } = await segments(3);
    const sizes = sizesOf(bodies);
    // The host writes the second segment again, one byte longer, after the plan listed it.
    await ingest.storage.put(keys[1] as string, Readable.from([randomBytes((sizes[1] as number) + 1)]));
    const before = await bundleKeys();
    const rejected = await counted(() =>
      copyBatch({ target: 'b2', batch: plannedBatch(keys, sizes) }, env, locations),
    );
    expect(rejected).toMatchObject({
      result: { copied: 0, failed: 3, failedKeys: [keys[0]] },
      heads: 0,
    });
    expect(await bundleKeys()).toEqual(before);
    const reader = new WalBundleStorage(target.storage);
    for (const key of keys) expect(await reader.head(key)).toBeUndefined();
  }, 60_000);

  it("checks each member against the checksum in ingest's GET answer: a match is bundled, other bytes reject the bundle", async () => {
    const checksum = (body: Buffer) => createHash('sha256').update(body).digest('base64');
    // What a provider computing full-object SHA-256 checksums sends for `body`'s key: of `sent`.
    const providerSends = (body: Buffer, sent: Buffer) =>
      proxy.set({
        method: 'GET',
        path: new RegExp(sha256(body).slice(0, 16)),
        responseHeaders: { 'x-amz-checksum-sha256': checksum(sent), 'x-amz-checksum-type': 'FULL_OBJECT' },
      });
    try {
      const good = await segments(2);
      providerSends(good.bodies[0] as Buffer, good.bodies[0] as Buffer);
      const copied = await counted(() =>
        copyBatch({ target: 'b2', batch: plannedBatch(good.keys, sizesOf(good.bodies)) }, env, locations),
      );
      expect(copied).toMatchObject({ result: { copied: 2, failed: 0 }, heads: 0 });

      // Ingest's checksum names other bytes than the GET brought (damaged at rest or on the way).
      const bad = await segments(2);
      providerSends(bad.bodies[1] as Buffer, randomBytes(100));
      const before = await bundleKeys();
      const rejected = await counted(() =>
        copyBatch({ target: 'b2', batch: plannedBatch(bad.keys, sizesOf(bad.bodies)) }, env, locations),
      );
      expect(rejected).toMatchObject({ result: { copied: 0, failed: 2, failedKeys: [bad.keys[0]] } });
      expect(await bundleKeys()).toEqual(before);
      const reader = new WalBundleStorage(target.storage);
      for (const key of bad.keys) expect(await reader.head(key)).toBeUndefined();
    } finally {
      proxy.set({});
    }
  }, 60_000);

  it('leaves the CRC64NVME S3 stores for an upload without a checksum to TLS: the SDK does not compute it again', async () => {
    const { keys, bodies } = await segments(2);
    // A CRC that matches nothing: the SDK would fail the read at its end if it checked it
    // (ChecksumMode); only a SHA-256, which the bundle writer computes anyway, is compared.
    proxy.set({
      method: 'GET',
      path: new RegExp(sha256(bodies[0] as Buffer).slice(0, 16)),
      responseHeaders: { 'x-amz-checksum-crc64nvme': 'AAAAAAAAAAA=', 'x-amz-checksum-type': 'FULL_OBJECT' },
    });
    try {
      const copied = await copyBatch(
        { target: 'b2', batch: plannedBatch(keys, sizesOf(bodies)) },
        env,
        locations,
      );
      expect(copied).toMatchObject({ copied: 2, failed: 0 });
    } finally {
      proxy.set({});
    }
  }, 60_000);

  it('refuses a batch whose sizes do not match its keys', async () => {
    const { keys, bodies } = await segments(2);
    await expect(
      copyBatch({ target: 'b2', batch: plannedBatch(keys, sizesOf(bodies).slice(1)) }, env, locations),
    ).rejects.toThrow(/has 1 listed sizes for 2 keys/);
  });
});
