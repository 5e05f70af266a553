// Replication's work does not grow with the archive: a real s3rver on 127.0.0.1 holds an archive of
// 20,000 and then 200,000 objects over 50 clusters (seeded by writing s3rver's on-disk layout, since
// uploading 200,000 objects would take far longer than the test), replication runs of the
// synthesized state machine with the real handlers find 10 new objects each time, and the fault
// proxy in front of the server counts the LIST requests: the same number at both sizes.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, replicationCursorKey, walKey } from '../../core/keys.ts';
import { type Manifest, serializeManifest } from '../../core/manifest.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv, RuntimeTarget } from '../../lambdas/lib/pipeline-env.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { manifestRunsBindings, replicationBindings, type StartedRun } from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import { backupIdAt, cursorsAt, seedArchive, sha256, walName } from '../support/seeded-archive.ts';
import { runStateMachine, type SynthesizedPipeline, synthPipeline } from '../support/state-machines.ts';

const CLUSTERS = Array.from({ length: 50 }, (_, i) => `db-${String(i).padStart(2, '0')}`);
let server: S3Server;
let proxy: FaultProxy;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;
let ingest: Location;
const targetLocations = new Map<string, Location>();

async function put(key: string, body: Buffer | string): Promise<void> {
  await ingest.storage.put(key, Readable.from([Buffer.from(body)]));
}

/** 10 new objects, as hosts push them: 8 WAL segments over 8 clusters and one logical backup. */
async function pushNew(n: number): Promise<string[]> {
  const keys: string[] = [];
  for (const cluster of CLUSTERS.slice(0, 8)) {
    const body = randomBytes(64);
    const key = walKey(cluster, walName(n), sha256(body));
    await put(key, body);
    keys.push(key);
  }
  const cluster = CLUSTERS[9] as string;
  const id = backupIdAt(n);
  const dump = randomBytes(256);
  const dumpKey = logicalDumpKey(cluster, 'app', id);
  await put(dumpKey, dump);
  const time = new Date().toISOString();
  const manifest: Manifest = {
    format: 'pgkeep.manifest.v1',
    backupId: id,
    cluster,
    kind: 'logical',
    pgVersionNum: 170004,
    systemIdentifier: '7300000000000000001',
    startTime: time,
    stopTime: time,
    objects: [
      {
        key: dumpKey,
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
  await put(manifestKey(cluster, id), serializeManifest(manifest));
  return [...keys, dumpKey, manifestKey(cluster, id)];
}

/**
 * One replication run, scheduled (the Standard machine) or started by a manifest (the Express front,
 * which hands a large backup to the Standard machine: `started`); returns the requests it made, the
 * states it entered and what each target summed up.
 */
async function replicationRun(
  input: unknown = { trigger: 'schedule' },
  started?: StartedRun[],
): Promise<{ lists: number; requests: number; states: number; targets: { objectsCopied: number }[] }> {
  const before = proxy.counts.lists;
  const requestsBefore = proxy.counts.requests;
  const standard = synth.stateMachine('replication');
  const bindings = replicationBindings(env, locations, []);
  const run = started
    ? await runStateMachine(
        synth.stateMachine('replicationManifestRuns'),
        manifestRunsBindings(standard, bindings, started),
        input,
      )
    : await runStateMachine(standard, bindings, input);
  return {
    lists: proxy.counts.lists - before,
    requests: proxy.counts.requests - requestsBefore,
    // Each one a billed transition in a Standard run; an Express run bills its request and duration (docs/costs.md).
    states: run.statesEntered.length,
    targets: (run.output as { targets: { objectsCopied: number }[] }).targets,
  };
}

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  proxy = await startFaultProxy(server.endpoint);
  synth = synthPipeline();
  // The synthesized machine replicates to the example config's targets: dr-aws and b2.
  const targets: RuntimeTarget[] = [
    { name: 'dr-aws', type: 'aws-s3', bucket: 'dr', region: 'us-east-1', prefix: '' },
    {
      name: 'b2',
      type: 's3-compatible',
      endpoint: proxy.endpoint,
      bucket: 'offsite',
      region: 'us-east-1',
      forcePathStyle: true,
      prefix: '',
      credentialsSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/targets/b2-AbCdEf',
    },
  ];
  env = {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: CLUSTERS,
    targets,
    batchSize: 200,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
  };
  ingest = { name: 'ingest', storage: s3rverStorage(proxy.endpoint, 'ingest') };
  targetLocations.set('dr-aws', { name: 'dr-aws', storage: s3rverStorage(proxy.endpoint, 'dr') });
  targetLocations.set('b2', { name: 'b2', storage: s3rverStorage(proxy.endpoint, 'offsite') });
  locations = {
    ingest: async () => ingest,
    target: async (target) => targetLocations.get(target.name) as Location,
  };
}, 120_000);

afterAll(async () => {
  synth?.dispose();
  await proxy?.stop();
  await server?.stop();
});

describe('replication at scale', () => {
  it('a run that finds 10 new objects makes the same number of LIST requests over 20,000 and 200,000 stored objects', async () => {
    const started = Date.now();
    // 20,000 objects: 400 per cluster, numbered 1,000,000 on; then the cursors at their end.
    seedArchive(server.directory, 'ingest', CLUSTERS, 400, 1_000_000);
    const cursors = JSON.stringify(cursorsAt(CLUSTERS, 1_000_000 + 400));
    for (const target of ['dr-aws', 'b2']) await put(replicationCursorKey(target), cursors);
    const seeded = Date.now();

    const newAtSmall = await pushNew(2_000_000);
    const small = await replicationRun();

    // 180,000 older objects more: 200,000 in all.
    seedArchive(server.directory, 'ingest', CLUSTERS, 3_600, 0);
    const seededMore = Date.now();
    const newAtLarge = await pushNew(2_000_001);
    const large = await replicationRun();

    for (const run of [small, large]) expect(run.targets.map((t) => t.objectsCopied)).toEqual([9, 9]);
    for (const [name, location] of targetLocations)
      for (const key of [...newAtSmall, ...newAtLarge])
        expect(await location.storage.head(key), `${name} ${key}`).toBeDefined();
    // Per cluster, once for both targets (their cursors are at the same place): manifests after
    // the cursor, and the WAL after the cursor of its one timeline (which would find a newer one).
    expect(small.lists).toBe(CLUSTERS.length * 2);
    expect(large.lists).toBe(small.lists);
    // A run started by a new manifest (the EventBridge rule starts the Express front) looks at that
    // manifest's cluster only, and a small backup needs no Standard run.
    const [, , , , , , , , dump, manifest] = await pushNew(2_000_002);
    const handedOff: StartedRun[] = [];
    const triggered = await replicationRun({ trigger: 'manifest', key: manifest }, handedOff);
    expect(handedOff).toEqual([]);
    expect(triggered.targets.map((t) => t.objectsCopied)).toEqual([1, 1]);
    expect(await targetLocations.get('b2')?.storage.head(dump as string)).toBeDefined();
    expect(triggered.lists).toBe(2);
    // Every run is small: the first step plans and copies every target, and the run ends. The
    // scheduled ones are 3 billed transitions; the manifest's 3 states are one Express request.
    for (const run of [small, large]) expect(run.states).toBe(3);
    expect(triggered.states).toBe(3);
    console.info(
      `replication scale: ${small.lists} LIST requests over 20,000 objects, ${large.lists} over 200,000, ${triggered.lists} in a run started by a manifest; ` +
        `all requests ${small.requests} / ${large.requests} / ${triggered.requests}; states entered ${small.states} / ${large.states} / ${triggered.states} (the last in the Express front); ` +
        `seeding ${((seeded - started + seededMore - seeded) / 1000).toFixed(1)} s, test ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  }, 180_000);
});
