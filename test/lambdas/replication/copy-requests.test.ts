/**
 * The requests one copy costs, counted at the servers: "Copy batch to target" copies a 16 MiB WAL
 * segment and a backup object from an s3rver ingest to an s3rver target, each behind a counting
 * proxy (test/support/fault-proxy.ts), and the requests each side answered are compared with the
 * figures docs/costs.md prices ("Per-object requests").
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, newBackupId, walKey } from '../../../core/keys.ts';
import { type Manifest, serializeManifest } from '../../../core/manifest.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { copyBatch } from '../../../lambdas/replication/copy-batch.ts';
import type { CopyBatch } from '../../../lambdas/replication/types.ts';
import { type FaultProxy, startFaultProxy } from '../../support/fault-proxy.ts';
import { localPipelineEnv } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { sha256, walName } from '../../support/seeded-archive.ts';
import { walSegment } from '../../support/wal-segment.ts';

const MIB = 1024 * 1024;
const CLUSTER = 'counted';

let ingestServer: S3Server;
let targetServer: S3Server;
let plainServer: S3Server;
let ingestProxy: FaultProxy;
let targetProxy: FaultProxy;
let plainProxy: FaultProxy;
let seed: Location;
let locations: LocationFactory;

beforeAll(async () => {
  [ingestServer, targetServer, plainServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    // Like AWS S3 (dr-aws): If-None-Match: * is honoured.
    startS3Server({ buckets: ['dr'], conditionalWrites: true }),
    // Like a provider that ignores the header (b2, configured without conditionalWrites).
    startS3Server({ buckets: ['b2'] }),
  ]);
  [ingestProxy, targetProxy, plainProxy] = await Promise.all([
    startFaultProxy(ingestServer.endpoint),
    startFaultProxy(targetServer.endpoint),
    startFaultProxy(plainServer.endpoint),
  ]);
  seed = { name: 'ingest', storage: s3rverStorage(ingestServer.endpoint, 'ingest') };
  const ingest = { name: 'ingest', storage: s3rverStorage(ingestProxy.endpoint, 'ingest') };
  const drAws = {
    name: 'dr-aws',
    storage: s3rverStorage(targetProxy.endpoint, 'dr'),
    conditionalWrites: true,
  };
  const b2 = { name: 'b2', storage: s3rverStorage(plainProxy.endpoint, 'b2') };
  locations = { ingest: async () => ingest, target: async (t) => (t.name === 'b2' ? b2 : drAws) };
});

afterAll(async () => {
  await Promise.all([ingestProxy?.stop(), targetProxy?.stop(), plainProxy?.stop()]);
  await Promise.all([ingestServer?.stop(), targetServer?.stop(), plainServer?.stop()]);
});

/** The deployed defaults for part size and large objects (the local env shrinks them). */
const env: PipelineEnv = {
  ...localPipelineEnv([CLUSTER], { drAws: 'dr', b2: 'b2' }),
  copyPartBytes: 16 * MIB,
  largeObjectBytes: 1024 * MIB,
};

async function hostPut(key: string, body: Buffer): Promise<void> {
  await seed.storage.put(key, Readable.from([body]));
}

/** A logical backup of one dump of `sizeBytes`, with its manifest; returns the dump's key. */
async function backup(sizeBytes: number): Promise<string> {
  const id = newBackupId(new Date());
  const dump = randomBytes(sizeBytes);
  const key = logicalDumpKey(CLUSTER, 'app', id);
  await hostPut(key, dump);
  const time = new Date().toISOString();
  const manifest: Manifest = {
    format: 'pgkeep.manifest.v1',
    backupId: id,
    cluster: CLUSTER,
    kind: 'logical',
    pgVersionNum: 170004,
    systemIdentifier: '7300000000000000001',
    startTime: time,
    stopTime: time,
    objects: [
      {
        key,
        role: 'dump',
        database: 'app',
        sizeBytes: dump.length,
        sha256: sha256(dump),
        plaintextSizeBytes: dump.length,
        codec: 'zstd',
        encryption: 'age-v1',
      },
    ],
    recipientFingerprints: ['0123456789abcdef'],
    agentVersion: '0.1.0',
  };
  await hostPut(manifestKey(CLUSTER, id), Buffer.from(serializeManifest(manifest)));
  return key;
}

type Operations = Record<string, number>;

/** Runs one batch; returns what it reported and the requests each side answered. */
async function batchCounted(batch: CopyBatch, to: 'dr-aws' | 'b2' = 'dr-aws') {
  const targetProxyOf = to === 'b2' ? plainProxy : targetProxy;
  const before = { ingest: { ...ingestProxy.operations }, target: { ...targetProxyOf.operations } };
  const diff = (now: Operations, then: Operations) =>
    Object.fromEntries(
      Object.entries(now)
        .map(([op, n]) => [op, n - (then[op] ?? 0)] as const)
        .filter(([, n]) => n > 0),
    );
  const out = await copyBatch({ target: to, batch }, env, locations);
  return {
    out,
    ingest: diff(ingestProxy.operations, before.ingest),
    target: diff(targetProxyOf.operations, before.target),
  };
}

/** Copies `key` as a hot-path batch names it. */
const copyCounted = (key: string, to: 'dr-aws' | 'b2' = 'dr-aws') =>
  batchCounted({ cluster: CLUSTER, firstKey: key, lastKey: key, count: 1, keys: [key] }, to);

async function segment(n: number): Promise<string> {
  const name = walName(n);
  const body = walSegment(name, 7300000000000000001n);
  const key = walKey(CLUSTER, name, sha256(body));
  await hostPut(key, body);
  return key;
}

describe('requests per copy, counted at the servers', () => {
  it('a 16 MiB WAL segment on the hot path: ingest HEAD + GET, target HEAD + PutObject + HEAD', async () => {
    const key = await segment(0x31);

    // Before this change: ingest 2 HEAD + GET; target 2 HEAD + PUT + GET (a full read-back).
    const first = await copyCounted(key);
    expect(first.out).toMatchObject({ copied: 1, failed: 0 });
    expect({ ingest: first.ingest, target: first.target }).toEqual({
      ingest: { HEAD: 1, GET: 1 },
      target: { HEAD: 2, PUT: 1 },
    });

    // Named again before it settles (the next run): one HEAD on each side (three before).
    const again = await copyCounted(key);
    expect(again.out).toMatchObject({ copied: 0, skipped: 1, failed: 0 });
    expect({ ingest: again.ingest, target: again.target }).toEqual({
      ingest: { HEAD: 1 },
      target: { HEAD: 1 },
    });

    // A target that ignores If-None-Match costs the same.
    const plain = await copyCounted(key, 'b2');
    expect(plain.out).toMatchObject({ copied: 1, failed: 0 });
    expect({ ingest: plain.ingest, target: plain.target }).toEqual({
      ingest: { HEAD: 1, GET: 1 },
      target: { HEAD: 2, PUT: 1 },
    });
  });

  it('segments a target listing lacks (a range, as reconciliation copies): no HEAD before the create-only PutObject', async () => {
    const keys = [await segment(0x41), await segment(0x42)];
    const batch = { cluster: CLUSTER, firstKey: keys[0]!, lastKey: keys[1]!, count: 2 };
    const run = await batchCounted(batch);
    expect(run.out).toMatchObject({ copied: 2, failed: 0 });
    // Per range: the first key's HEAD and one LIST on each side (at the target, where the first
    // key is missing, a GET tells a missing key from a missing bucket). Per copy: ingest HEAD
    // (checksum) + GET, target PutObject + HEAD.
    expect({ ingest: run.ingest, target: run.target }).toEqual({
      ingest: { HEAD: 1 + 2, LIST: 1, GET: 2 },
      target: { HEAD: 1 + 2, GET: 1, LIST: 1, PUT: 2 },
    });

    // Where If-None-Match is not honoured, a HEAD still comes first.
    const plain = await batchCounted(batch, 'b2');
    expect(plain.out).toMatchObject({ copied: 2, failed: 0 });
    expect(plain.target).toEqual({ HEAD: 1 + 2 * 2, GET: 1, LIST: 1, PUT: 2 });
  });

  it('a backup object its manifest vouches for (4 MiB dump)', async () => {
    const key = await backup(4 * MIB);
    const first = await copyCounted(key);
    expect(first.out).toMatchObject({ copied: 1, failed: 0 });
    // The manifest costs a HEAD and a GET once per backup, whatever its number of objects.
    // Before this change: ingest 3 HEAD + 2 GET (the manifest's HEAD twice); target 2 HEAD + PUT + GET.
    expect({ ingest: first.ingest, target: first.target }).toEqual({
      ingest: { HEAD: 2, GET: 2 },
      target: { HEAD: 2, PUT: 1 },
    });
  });
});
