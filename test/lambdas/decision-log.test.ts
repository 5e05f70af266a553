// The Lambdas' decision log, captured from a real local replication run (the synthesized state
// machine, the real handlers, s3rver for ingest and both targets): every decision is one JSON line
// naming the run (the execution's name), the cluster and the target, and no credential appears.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, walKey } from '../../core/keys.ts';
import { serializeManifest } from '../../core/manifest.ts';
import { awsLocations, type Location, type LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { providerTarget, replicationBindings, retentionBindings } from '../support/local-pipeline.ts';
import { S3RVER_CREDENTIALS, type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import { runStateMachine, type SynthesizedPipeline, synthPipeline } from '../support/state-machines.ts';
import { manifestOf } from '../support/test-manifests.ts';

const CLUSTER = 'main';
const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/targets/b2-AbCdEf';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
type Line = Record<string, unknown> & { decision: string; run: string; target?: string; cluster?: string };

let ingestServer: S3Server;
let drServer: S3Server;
let b2Server: S3Server;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;
let secretsRead = 0;

beforeAll(async () => {
  [ingestServer, drServer, b2Server] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['dr'] }),
    startS3Server({ buckets: ['offsite'] }),
  ]);
  synth = synthPipeline();
  env = {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: [CLUSTER],
    targets: [
      { name: 'dr-aws', type: 'aws-s3', bucket: 'dr', region: 'us-east-1', prefix: '' },
      providerTarget(b2Server.endpoint, SECRET_ARN),
    ],
    batchSize: 2,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
  };
  // The b2 key comes from its "secret" through the production factory, as in Lambda.
  const production = awsLocations(env, async () => {
    secretsRead += 1;
    return S3RVER_CREDENTIALS;
  });
  const ingest: Location = { name: 'ingest', storage: s3rverStorage(ingestServer.endpoint, 'ingest') };
  const dr: Location = { name: 'dr-aws', storage: s3rverStorage(drServer.endpoint, 'dr') };
  locations = {
    ingest: async () => ingest,
    target: async (target) => (target.type === 'aws-s3' ? dr : production.target(target)),
  };
});

afterAll(async () => {
  synth?.dispose();
  await Promise.all([ingestServer?.stop(), drServer?.stop(), b2Server?.stop()]);
});

async function put(location: Location, key: string, body: Buffer): Promise<void> {
  await location.storage.put(key, Readable.from([body]));
}

async function writeBackup(backupId: string, stopTime: string): Promise<void> {
  const ingest = await locations.ingest();
  const dump = Buffer.from(`dump of ${backupId}`);
  const key = logicalDumpKey(CLUSTER, 'shop', backupId);
  await put(ingest, key, dump);
  const manifest = manifestOf(CLUSTER, backupId, stopTime, [{ key, role: 'dump', body: dump }]);
  await put(ingest, manifestKey(CLUSTER, backupId), Buffer.from(serializeManifest(manifest)));
}

function parse(lines: string[]): Line[] {
  return lines.map((line) => {
    expect(line.endsWith('\n') && !line.slice(0, -1).includes('\n'), line).toBe(true);
    return JSON.parse(line) as Line;
  });
}

describe('the decision log of a local replication run', () => {
  it('names run, cluster and target on every decision, and carries no credential', async () => {
    const ingest = await locations.ingest();
    await writeBackup('20251101T000000Z-0001', '2025-11-01T00:00:00Z');
    const wal = ['000000010000000000000001', '000000010000000000000002'].map((name) => {
      const body = Buffer.from(`wal ${name}`);
      return { key: walKey(CLUSTER, name, sha256(body)), body };
    });
    for (const { key, body } of wal) await put(ingest, key, body);
    // A copy at b2 with other bytes than ingest: kept, never replaced, and logged as such.
    const tampered = wal[1] as { key: string };
    await put(
      await locations.target(env.targets[1] as never),
      tampered.key,
      Buffer.from('other bytes!!!!!!!!!!!!'),
    );

    const written: string[] = [];
    const run = await runStateMachine(
      synth.stateMachine('replication'),
      replicationBindings(env, locations, [], {}, { logWrite: (line) => written.push(line) }),
      {},
    ).catch((error) => error as { name: string });
    expect((run as { name?: string }).name).not.toBe('local');
    const lines = parse(written);
    expect(secretsRead).toBeGreaterThan(0);

    // Every line: the execution's name as run id, the handler, and the target it worked on.
    expect(lines.length).toBeGreaterThan(0);
    const runs = new Set(lines.map((l) => l.run));
    expect(runs.size).toBe(1);
    expect([...runs][0]).toMatch(/^local-[0-9a-f-]{36}$/);
    for (const line of lines) {
      expect(['dr-aws', 'b2']).toContain(line.target);
      expect(line.cluster).toBe(CLUSTER);
      expect(line.handler).toMatch(/^replication\//);
      expect(line.level).toBe('INFO');
    }
    const decided = (target: string, decision: string) =>
      lines.filter((l) => l.target === target && l.decision === decision);
    for (const target of ['dr-aws', 'b2']) {
      expect(decided(target, 'planned copies')).toHaveLength(1);
      expect(decided(target, 'planned copies')[0]).toMatchObject({ objects: 3, manifests: 1 });
    }
    expect(decided('dr-aws', 'copied').map((l) => l.key)).toEqual(
      expect.arrayContaining([
        logicalDumpKey(CLUSTER, 'shop', '20251101T000000Z-0001'),
        ...wal.map((w) => w.key),
      ]),
    );
    expect(decided('b2', 'kept tampered copy').map((l) => l.key)).toEqual([tampered.key]);
    expect(decided('dr-aws', 'manifest copied').map((l) => l.key)).toEqual([
      manifestKey(CLUSTER, '20251101T000000Z-0001'),
    ]);
    expect(decided('dr-aws', 'cursor advanced')).toHaveLength(1);
    // b2 has a failed object: its cursor stays where it was, and the log says so.
    expect(decided('b2', 'cursor advanced')).toHaveLength(0);
    expect(decided('b2', 'cursor kept')).toHaveLength(1);

    // A verify run re-checks every copy and skips the verified ones, under a new run id.
    const again: string[] = [];
    await runStateMachine(
      synth.stateMachine('replication'),
      replicationBindings(env, locations, [], {}, { logWrite: (line) => again.push(line) }),
      { verify: true },
    ).catch(() => undefined);
    const second = parse(again);
    expect(new Set(second.map((l) => l.run)).has([...runs][0] as string)).toBe(false);
    expect(second.filter((l) => l.target === 'dr-aws' && l.decision === 'skipped').length).toBeGreaterThan(0);

    // No credential, nor anything named like one, in any line.
    const all = [...written, ...again].join('');
    for (const value of [S3RVER_CREDENTIALS.accessKeyId, S3RVER_CREDENTIALS.secretAccessKey])
      expect(all).not.toContain(value);
    expect(all).not.toMatch(/secretAccessKey|accessKeyId|sessionToken|password/i);
  });

  it('retention logs each backup kept or deleted with its reason', async () => {
    await writeBackup('20251102T000000Z-0002', '2025-11-02T00:00:00Z');
    await runStateMachine(
      synth.stateMachine('replication'),
      replicationBindings(env, locations, []),
      {},
    ).catch(() => undefined);
    const written: string[] = [];
    const policy = { minimumKeep: 1, keepLast: 1 };
    await runStateMachine(
      synth.stateMachine('retention'),
      retentionBindings(env, locations, { 'dr-aws': policy, b2: policy }, [], {
        logWrite: (line) => written.push(line),
      }),
      {},
    );
    const lines = parse(written).filter((l) => l.target === 'dr-aws');
    expect(lines.find((l) => l.decision === 'backup kept')).toMatchObject({
      cluster: CLUSTER,
      backupId: '20251102T000000Z-0002',
    });
    const deleted = lines.find((l) => l.decision === 'backup deleted');
    expect(deleted).toMatchObject({ cluster: CLUSTER, backupId: '20251101T000000Z-0001' });
    expect(String(deleted?.reason)).not.toBe('');
    expect(lines.filter((l) => l.decision === 'deleted').map((l) => l.key)).toContain(
      manifestKey(CLUSTER, '20251101T000000Z-0001'),
    );
    for (const line of lines) expect(line.run).toMatch(/^local-/);
  });
});
