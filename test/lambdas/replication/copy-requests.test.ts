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

/** Copies `key` as a hot-path batch names it; returns what the batch reported and the requests each side answered. */
async function copyCounted(key: string, to: 'dr-aws' | 'b2' = 'dr-aws') {
  const targetProxyOf = to === 'b2' ? plainProxy : targetProxy;
  const before = { ingest: { ...ingestProxy.operations }, target: { ...targetProxyOf.operations } };
  const diff = (now: Operations, then: Operations) =>
    Object.fromEntries(
      Object.entries(now)
        .map(([op, n]) => [op, n - (then[op] ?? 0)] as const)
        .filter(([, n]) => n > 0),
    );
  const out = await copyBatch(
    { target: to, batch: { cluster: CLUSTER, firstKey: key, lastKey: key, count: 1, keys: [key] } },
    env,
    locations,
  );
  return {
    out,
    ingest: diff(ingestProxy.operations, before.ingest),
    target: diff(targetProxyOf.operations, before.target),
  };
}

describe('requests per copy, counted at the servers', () => {
  it('a 16 MiB WAL segment: one HEAD and one GET at ingest, a PutObject and a HEAD at the target', async () => {
    const name = walName(0x31);
    const body = walSegment(name, 7300000000000000001n);
    const key = walKey(CLUSTER, name, sha256(body));
    await hostPut(key, body);

    // Before this change: ingest 2 HEAD + GET; target 2 HEAD + PUT + GET (a full read-back).
    const first = await copyCounted(key);
    expect(first.out).toMatchObject({ copied: 1, failed: 0 });
    expect({ ingest: first.ingest, target: first.target }).toEqual({
      ingest: { HEAD: 1, GET: 1 },
      target: { PUT: 1, HEAD: 1 },
    });

    // Named again (a retried batch): the create-only PUT is refused and the copy there is read
    // and found to hold the same bytes; nothing is overwritten.
    const again = await copyCounted(key);
    expect(again.out).toMatchObject({ copied: 0, skipped: 1, failed: 0 });
    expect({ ingest: again.ingest, target: again.target }).toEqual({
      ingest: { HEAD: 1, GET: 1 },
      target: { PUT: 1, HEAD: 1, GET: 1 },
    });

    // A target that ignores If-None-Match gets a HEAD first, so nothing there is overwritten.
    const plain = await copyCounted(key, 'b2');
    expect(plain.out).toMatchObject({ copied: 1, failed: 0 });
    expect({ ingest: plain.ingest, target: plain.target }).toEqual({
      ingest: { HEAD: 1, GET: 1 },
      target: { HEAD: 2, PUT: 1 },
    });
    const plainAgain = await copyCounted(key, 'b2');
    expect(plainAgain.out).toMatchObject({ copied: 0, skipped: 1, failed: 0 });
    expect({ ingest: plainAgain.ingest, target: plainAgain.target }).toEqual({
      ingest: { HEAD: 1 },
      target: { HEAD: 1 },
    });
  });

  it('a backup object its manifest vouches for (4 MiB dump)', async () => {
    const key = await backup(4 * MIB);
    const first = await copyCounted(key);
    expect(first.out).toMatchObject({ copied: 1, failed: 0 });
    // The manifest costs a HEAD and a GET once per backup, whatever its number of objects.
    // Before this change: ingest 3 HEAD + 2 GET (the manifest's HEAD twice); target 2 HEAD + PUT + GET.
    expect({ ingest: first.ingest, target: first.target }).toEqual({
      ingest: { HEAD: 2, GET: 2 },
      target: { PUT: 1, HEAD: 1 },
    });
  });
});
