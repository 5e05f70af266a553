// The real handler modules behind the synthesized state machines, against real S3-compatible
// servers on 127.0.0.1: one s3rver holds ingest and the "AWS" target bucket, a second one plays an
// S3-compatible provider reached with credentials from its secret. Replication copies every object
// (manifests last), is idempotent, survives a provider going down; retention deletes what the
// planner drops; freshness and verification read what is really in the buckets.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, verifyReportKey, walKey } from '../../core/keys.ts';
import { type Manifest, serializeManifest } from '../../core/manifest.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import { awsLocations, type Location, type LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv, RuntimeTarget } from '../../lambdas/lib/pipeline-env.ts';
import { copyBatch } from '../../lambdas/replication/copy-batch.ts';
import { copyManifests } from '../../lambdas/replication/copy-manifests.ts';
import { planCopies } from '../../lambdas/replication/plan-copies.ts';
import { deleteBatch } from '../../lambdas/retention/delete-batch.ts';
import { planTargetRetention } from '../../lambdas/retention/plan-retention.ts';
import { pickBackup } from '../../lambdas/verification/pick-backup.ts';
import { recordResult } from '../../lambdas/verification/record-result.ts';
import { createS3Client, S3Storage } from '../../storage/s3-storage.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../support/s3-server.ts';
import {
  type ExecutionFailed,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
  type TaskBindings,
} from '../support/state-machines.ts';

const CLUSTER = 'main';
let aws: S3Server;
let provider: S3Server;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;

function storageOn(server: S3Server, bucket: string, prefix = ''): S3Storage {
  const options = { bucket, prefix, endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1' };
  const client = createS3Client(options);
  // s3rver accepts only its fixed keys; the SDK's chain is not touched for the provider (see below).
  client.config.credentials = async () => S3RVER_CREDENTIALS;
  return new S3Storage(options, client);
}

beforeAll(async () => {
  [aws, provider] = await Promise.all([
    startS3Server({ buckets: ['ingest', 'dr'] }),
    startS3Server({ buckets: ['offsite'] }),
  ]);
  synth = synthPipeline();
  const targets: RuntimeTarget[] = [
    { name: 'dr-aws', type: 'aws-s3', bucket: 'dr', region: 'us-east-1', prefix: 'copies/' },
    {
      name: 'b2',
      type: 's3-compatible',
      endpoint: provider.endpoint,
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
    clusters: [CLUSTER],
    targets,
    batchSize: 2,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
  };
  // The production factory for the S3-compatible provider (credentials from its "secret"); AWS S3
  // itself is not reachable here, so ingest and the aws-s3 target are s3rver buckets.
  const production = awsLocations(env, async (arn) => {
    expect(arn).toBe(targets[1]?.type === 's3-compatible' ? targets[1].credentialsSecretArn : '');
    return S3RVER_CREDENTIALS;
  });
  const ingest: Location = { name: 'ingest', storage: storageOn(aws, 'ingest') };
  const dr: Location = { name: 'dr-aws', storage: storageOn(aws, 'dr', 'copies/') };
  locations = {
    ingest: async () => ingest,
    target: async (target) => (target.type === 'aws-s3' ? dr : production.target(target)),
  };
});

afterAll(async () => {
  synth?.dispose();
  await Promise.all([aws?.stop(), provider?.stop()]);
});

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function put(location: Location, key: string, body: Buffer | string): Promise<void> {
  await location.storage.put(key, Readable.from([Buffer.from(body)]));
}

async function keysOf(location: Location): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of location.storage.list('v1/')) keys.push(object.key);
  return keys;
}

/** A logical backup of database "shop": its dump object, then its manifest (written last). */
async function writeLogicalBackup(backupId: string, stopTime: string, pgVersionNum = 170004): Promise<void> {
  const ingest = await locations.ingest();
  const dump = Buffer.from(`dump of ${backupId}`);
  const key = logicalDumpKey(CLUSTER, 'shop', backupId);
  await put(ingest, key, dump);
  const manifest: Manifest = {
    format: 'pgkeep.manifest.v1',
    backupId,
    cluster: CLUSTER,
    kind: 'logical',
    pgVersionNum,
    systemIdentifier: '7300000000000000001',
    startTime: stopTime,
    stopTime,
    objects: [
      {
        key,
        role: 'dump',
        database: 'shop',
        sizeBytes: dump.length,
        sha256: sha256(dump),
        plaintextSizeBytes: dump.length,
        plaintextSha256: sha256(dump),
        codec: 'zstd',
        encryption: 'age-v1',
      },
    ],
    recipientFingerprints: ['0123456789abcdef'],
    agentVersion: '0.1.0',
  };
  await put(ingest, manifestKey(CLUSTER, backupId), serializeManifest(manifest));
}

async function writeWal(segments: number): Promise<void> {
  const ingest = await locations.ingest();
  for (let i = 1; i <= segments; i++) {
    const name = `0000000100000000000000${i.toString(16).toUpperCase().padStart(2, '0')}`;
    const body = Buffer.from(`wal ${name}`);
    await put(ingest, walKey(CLUSTER, name, sha256(body)), body);
  }
}

function replicationBindings(alerts: unknown[]): TaskBindings {
  return {
    lambdas: {
      'replication/plan-copies': (input) => planCopies(input as never, env, locations),
      'replication/copy-batch': (input) => copyBatch(input as never, env, locations),
      'replication/copy-manifests': (input) => copyManifests(input as never, env, locations),
    },
    states: { 'Alert replication failure': (input) => alerts.push(input) },
  };
}

const OLD = '20261120T010000Z-aaaa';
const NEW = '20261121T010000Z-bbbb';

describe('replication state machine with the real handlers', () => {
  it('copies every object of ingest to both targets in batches, manifests last, with identical bytes', async () => {
    await writeWal(5);
    await writeLogicalBackup(OLD, '2026-11-20T01:05:00.000Z');
    await writeLogicalBackup(NEW, '2026-11-21T01:05:00.000Z');

    // Object times are the server's clock; measure a minute later so every missing object has aged.
    const now = new Date(Date.now() + 60_000);
    const before = await measureFreshness(env, locations, now);
    const lag = before.metrics.filter((m) => m.name === 'ReplicationLagSeconds');
    expect(lag.map((m) => m.dimensions.Target).sort()).toEqual(['b2', 'dr-aws']);
    for (const m of lag) expect(m.value).toBeGreaterThan(0);

    const alerts: unknown[] = [];
    const run = await runStateMachine(synth.stateMachine('replication'), replicationBindings(alerts), {});
    expect(alerts).toEqual([]);
    expect(run.output).toEqual({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 7, manifestsCopied: 2, more: false },
        { target: 'b2', status: 'ok', objectsCopied: 7, manifestsCopied: 2, more: false },
      ],
    });
    const ingest = await locations.ingest();
    const expected = await keysOf(ingest);
    expect(expected).toHaveLength(9);
    for (const target of env.targets) {
      const location = await locations.target(target);
      expect(await keysOf(location)).toEqual(expected);
      for (const key of expected)
        expect(await text(await location.storage.get(key))).toBe(await text(await ingest.storage.get(key)));
    }
    // The aws-s3 target keeps its copies under its configured prefix.
    expect((await aws.openUploads('dr')).length).toBe(0);

    const after = await measureFreshness(env, locations, now);
    expect(after.metrics).toEqual(
      expect.arrayContaining([
        {
          name: 'NewestDumpAgeSeconds',
          value: (now.getTime() - Date.parse('2026-11-21T01:05:00.000Z')) / 1000,
          unit: 'Seconds',
          dimensions: { Cluster: CLUSTER },
        },
        {
          name: 'ReplicationLagSeconds',
          value: 0,
          unit: 'Seconds',
          dimensions: { Cluster: CLUSTER, Target: 'b2' },
        },
        {
          name: 'ReplicationLagSeconds',
          value: 0,
          unit: 'Seconds',
          dimensions: { Cluster: CLUSTER, Target: 'dr-aws' },
        },
      ]),
    );
    expect(after.metrics.find((m) => m.name === 'NewestWalAgeSeconds')?.value).toBeGreaterThanOrEqual(0);
  });

  it('is idempotent: a second run copies nothing', async () => {
    const run = await runStateMachine(synth.stateMachine('replication'), replicationBindings([]), {});
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', objectsCopied: 0, manifestsCopied: 0 },
        { target: 'b2', objectsCopied: 0, manifestsCopied: 0 },
      ],
    });
  });

  it('a provider that is down fails only its branch with an alert; the next run catches up', async () => {
    await writeWal(7);
    await provider.kill();
    const alerts: { Message?: string }[] = [];
    try {
      const failed = await runStateMachine(
        synth.stateMachine('replication'),
        replicationBindings(alerts),
        {},
      ).catch((error: unknown) => error);
      expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
      expect(alerts).toHaveLength(1);
      expect(alerts[0]?.Message).toMatch(/^Replication to target b2 failed: /);
      const dr = await locations.target(env.targets[0]!);
      expect(await keysOf(dr)).toEqual(await keysOf(await locations.ingest()));
    } finally {
      await provider.restart();
    }
    const run = await runStateMachine(synth.stateMachine('replication'), replicationBindings([]), {});
    expect(run.output).toMatchObject({
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 0 },
        { target: 'b2', status: 'ok', objectsCopied: 2 },
      ],
    });
    const b2 = await locations.target(env.targets[1]!);
    expect(await keysOf(b2)).toEqual(await keysOf(await locations.ingest()));
  });
});

describe('retention state machine with the real handlers and planner', () => {
  it('deletes the backup the policy drops from each target (manifest first), never from ingest', async () => {
    const policy = { minimumKeep: 1, keepLast: 1 };
    const alerts: unknown[] = [];
    const run = await runStateMachine(
      synth.stateMachine('retention'),
      {
        lambdas: {
          'retention/plan-retention': (input) =>
            planTargetRetention(input as never, env, locations, { 'dr-aws': policy, b2: policy }),
          'retention/delete-batch': (input) => deleteBatch(input as never, env, locations),
        },
        states: { 'Alert retention failure': (input) => alerts.push(input) },
      },
      {},
    );
    expect(alerts).toEqual([]);
    expect(run.output).toEqual({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', kept: 1, expired: 1 },
        { target: 'b2', status: 'ok', kept: 1, expired: 1 },
      ],
    });
    const ingestKeys = await keysOf(await locations.ingest());
    const dropped = [manifestKey(CLUSTER, OLD), logicalDumpKey(CLUSTER, 'shop', OLD)];
    for (const target of env.targets)
      expect(await keysOf(await locations.target(target))).toEqual(
        ingestKeys.filter((k) => !dropped.includes(k)),
      );
    expect(ingestKeys).toEqual(expect.arrayContaining(dropped));
  });
});

describe('verification handlers', () => {
  it('pick the newest backup with its major version, and record the report the task wrote', async () => {
    const now = new Date('2026-11-22T05:00:00Z');
    const picked = await pickBackup({}, env, locations, now);
    expect(picked).toEqual({
      cluster: CLUSTER,
      backupId: NEW,
      manifestKey: manifestKey(CLUSTER, NEW),
      kind: 'logical',
      pgMajor: 17,
      runId: `20261122T050000Z-${NEW}`,
      reportKey: verifyReportKey(CLUSTER, `20261122T050000Z-${NEW}`),
    });

    // No report: the task's exit status proves nothing.
    expect(await recordResult({ backup: picked as never }, locations)).toMatchObject({
      passed: false,
      summary: expect.stringContaining('ended without writing its report'),
    });
    await put(
      await locations.ingest(),
      picked.reportKey,
      JSON.stringify({ backupId: NEW, passed: true, summary: 'pg_restore ok, 1 assertion passed' }),
    );
    expect(await recordResult({ backup: picked as never }, locations)).toEqual({
      passed: true,
      summary: `backup ${NEW} of cluster ${CLUSTER}: restore verified: pg_restore ok, 1 assertion passed`,
      reportKey: picked.reportKey,
    });
  });

  it('finds nothing to verify in an empty cluster', async () => {
    await expect(pickBackup({}, { ...env, clusters: ['empty'] }, locations)).rejects.toThrow(
      /no backup to verify: no manifest under v1\/empty\/manifests\//,
    );
  });
});
