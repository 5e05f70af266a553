// The real handler modules behind the synthesized state machines, against three real S3-compatible
// servers on 127.0.0.1: ingest, the "AWS" target and an S3-compatible provider reached with
// credentials from its secret. Replication copies every object (manifests last, a large base backup
// object through the part-range fan-out), verifies each copy's sha256, is idempotent (a second run
// skips everything), survives a provider down for a whole run and one killed mid-copy, and copies
// again an object corrupted at a target; retention deletes what the planner drops; freshness and
// verification read what is really in the buckets.
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer, text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, verifyReportKey, walKey } from '../../core/keys.ts';
import { serializeManifest } from '../../core/manifest.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import { awsLocations, type Location, type LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv, RuntimeTarget } from '../../lambdas/lib/pipeline-env.ts';
import { pickBackup } from '../../lambdas/verification/pick-backup.ts';
import { recordResult } from '../../lambdas/verification/record-result.ts';
import {
  replicationBindings as localReplicationBindings,
  providerTarget,
  retentionBindings,
} from '../support/local-pipeline.ts';
import { S3RVER_CREDENTIALS, type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import {
  type ExecutionFailed,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
  type TaskBindings,
} from '../support/state-machines.ts';
import { manifestOf } from '../support/test-manifests.ts';

const CLUSTER = 'main';
const MIB = 1024 * 1024;
let ingestServer: S3Server;
let aws: S3Server;
let provider: S3Server;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;

beforeAll(async () => {
  [ingestServer, aws, provider] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['dr'] }),
    startS3Server({ buckets: ['offsite'] }),
  ]);
  synth = synthPipeline();
  const targets: RuntimeTarget[] = [
    { name: 'dr-aws', type: 'aws-s3', bucket: 'dr', region: 'us-east-1', prefix: 'copies/' },
    providerTarget(provider.endpoint),
  ];
  env = {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: [CLUSTER],
    targets,
    batchSize: 2,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
    // Small enough that a 13 MiB object takes the large-object fan-out (3 parts, 2 per invocation)
    // and an 11 MiB one a multipart copy inside its batch.
    largeObjectBytes: 12 * MIB,
    copyPartBytes: 5 * MIB,
    partsPerInvocation: 2,
  };
  // The production factory for the S3-compatible provider (credentials from its "secret"); AWS S3
  // itself is not reachable here, so ingest and the aws-s3 target are s3rver servers too.
  const production = awsLocations(env, async (arn) => {
    expect(arn).toBe(targets[1]?.type === 's3-compatible' ? targets[1].credentialsSecretArn : '');
    return S3RVER_CREDENTIALS;
  });
  const ingest: Location = { name: 'ingest', storage: s3rverStorage(ingestServer.endpoint, 'ingest') };
  const dr: Location = { name: 'dr-aws', storage: s3rverStorage(aws.endpoint, 'dr', 'copies/') };
  locations = {
    ingest: async () => ingest,
    target: async (target) => (target.type === 'aws-s3' ? dr : production.target(target)),
  };
});

afterAll(async () => {
  synth?.dispose();
  await Promise.all([ingestServer?.stop(), aws?.stop(), provider?.stop()]);
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
async function writeLogicalBackup(
  backupId: string,
  stopTime: string,
  dump: Buffer = Buffer.from(`dump of ${backupId}`),
  pgVersionNum = 170004,
): Promise<void> {
  const ingest = await locations.ingest();
  const key = logicalDumpKey(CLUSTER, 'shop', backupId);
  await put(ingest, key, dump);
  const manifest = manifestOf(
    CLUSTER,
    backupId,
    stopTime,
    [{ key, role: 'dump', body: dump }],
    undefined,
    pgVersionNum,
  );
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
  return localReplicationBindings(env, locations, alerts);
}

const OLD = '20261120T010000Z-aaaa';
const NEW = '20261121T010000Z-bbbb';
/** A backup whose 13 MiB dump is above the large-object threshold: copied by the part-range fan-out. */
const LARGE = '20261121T020000Z-cccc';
/** A backup whose 11 MiB dump is a multipart copy inside its batch: the provider is killed during it. */
const MULTI = '20261121T030000Z-dddd';
/** The newest backup; written last. */
const NEWEST = '20261121T040000Z-eeee';
const largeDump = randomBytes(13 * MIB);

type TargetOutput = { target: string; status: string; [field: string]: unknown };
/**
 * A reconciliation run by default: these tests damage or remove copies at a target, which only the
 * full comparison looks at; the hot path (only what is new since the cursors) is checked on its own.
 */
async function replicate(
  input: unknown = { reconcile: true },
  alerts: unknown[] = [],
): Promise<TargetOutput[]> {
  const run = await runStateMachine(synth.stateMachine('replication'), replicationBindings(alerts), input);
  return (run.output as { targets: TargetOutput[] }).targets;
}

/**
 * Every target holds exactly ingest's keys with identical bytes, and no multipart upload is left
 * open — except after a kill (`openUploadsExpected`), when the provider could not be told to abort.
 */
async function expectIdenticalCopies(options: { openUploadsExpected?: boolean } = {}): Promise<void> {
  const ingest = await locations.ingest();
  const expected = await keysOf(ingest);
  for (const target of env.targets) {
    const location = await locations.target(target);
    expect(await keysOf(location), target.name).toEqual(expected);
    for (const key of expected) {
      const [a, b] = await Promise.all([location.storage.get(key), ingest.storage.get(key)]);
      const [x, y] = await Promise.all([text(a), text(b)]);
      expect(sha256(Buffer.from(x)), `${target.name} ${key}`).toBe(sha256(Buffer.from(y)));
    }
  }
  if (options.openUploadsExpected) return;
  expect(await aws.openUploads('dr')).toEqual([]);
  expect(await provider.openUploads('offsite')).toEqual([]);
}

describe('replication state machine with the real handlers', () => {
  it('copies every object of ingest to both targets (a large one by part ranges), manifests last, verified', async () => {
    await writeWal(5);
    await writeLogicalBackup(OLD, '2026-11-20T01:05:00.000Z');
    await writeLogicalBackup(NEW, '2026-11-21T01:05:00.000Z');
    await writeLogicalBackup(LARGE, '2026-11-21T02:05:00.000Z', largeDump);

    // Object times are the server's clock; measure a minute later so every missing object has aged.
    const now = new Date(Date.now() + 60_000);
    const before = await measureFreshness(env, locations, now);
    const lag = before.metrics.filter((m) => m.name === 'ReplicationLagSeconds');
    expect(lag.map((m) => m.dimensions.Target).sort()).toEqual(['b2', 'dr-aws']);
    for (const m of lag) expect(m.value).toBeGreaterThan(0);

    const alerts: unknown[] = [];
    const run = await runStateMachine(synth.stateMachine('replication'), replicationBindings(alerts), {});
    expect(alerts).toEqual([]);
    const bytes =
      5 * 'wal 000000010000000000000001'.length +
      2 * 'dump of 20261120T010000Z-aaaa'.length +
      largeDump.length;
    const summary = {
      status: 'ok',
      objectsCopied: 8,
      objectsSkipped: 0,
      objectsFailed: 0,
      bytesCopied: bytes,
      lagSeconds: 0,
      manifestsCopied: 3,
      manifestsWaiting: 0,
      trustViolations: 0,
    };
    expect(run.output).toEqual({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', ...summary },
        { target: 'b2', ...summary },
      ],
    });
    expect(run.statesEntered).toEqual(
      expect.arrayContaining(['Start large copy', 'Copy part range', 'Complete large copy']),
    );
    // 3 parts, 2 per invocation: two "Copy part range" per target.
    expect(run.statesEntered.filter((s) => s === 'Copy part range')).toHaveLength(4);
    expect(await keysOf(await locations.ingest())).toHaveLength(11);
    await expectIdenticalCopies();

    const after = await measureFreshness(env, locations, now);
    expect(after.metrics).toEqual(
      expect.arrayContaining([
        {
          name: 'NewestDumpAgeSeconds',
          value: (now.getTime() - Date.parse('2026-11-21T02:05:00.000Z')) / 1000,
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

  it('is idempotent: a second run copies nothing and says every object was skipped', async () => {
    const skippedEverything = {
      status: 'ok',
      objectsCopied: 0,
      objectsSkipped: 11,
      objectsFailed: 0,
      bytesCopied: 0,
      manifestsCopied: 0,
    };
    expect(await replicate()).toMatchObject([
      { target: 'dr-aws', ...skippedEverything },
      { target: 'b2', ...skippedEverything },
    ]);
    // The hot path (cursors from the runs above) copies nothing either: only the unsettled WAL is
    // looked at again, and found there.
    const nothingCopied = {
      status: 'ok',
      objectsCopied: 0,
      objectsFailed: 0,
      bytesCopied: 0,
      manifestsCopied: 0,
    };
    expect(await replicate({})).toMatchObject([
      { target: 'dr-aws', ...nothingCopied },
      { target: 'b2', ...nothingCopied },
    ]);
    // A verify run reads every copy and checks its sha256: all verified, none copied.
    expect(await replicate({ verify: true })).toMatchObject([
      { target: 'dr-aws', ...skippedEverything },
      { target: 'b2', ...skippedEverything },
    ]);
  });

  it('a copy at a target with other bytes (same size) is found by a verify run, kept, reported and alerted; copied again once removed', async () => {
    const b2 = await locations.target(env.targets[1]!);
    const dumpKey = logicalDumpKey(CLUSTER, 'shop', LARGE);
    const walObject = (await keysOf(b2)).find((k) => k.includes('/wal/'))!;
    const corrupt = Buffer.from(largeDump);
    corrupt[7 * MIB] = (corrupt[7 * MIB] ?? 0) ^ 0xff;
    await put(b2, dumpKey, corrupt);
    const wal = Buffer.from(await text(await b2.storage.get(walObject)));
    const corruptWal = Buffer.from(wal.toString().toUpperCase());
    await put(b2, walObject, corruptWal);

    // A normal run goes by the listing: same sizes, nothing to do.
    expect(await replicate()).toMatchObject([
      { target: 'dr-aws', objectsCopied: 0 },
      { target: 'b2', objectsCopied: 0 },
    ]);
    // A verify run finds both (the dump against its manifest's sha256, the WAL segment against
    // ingest's bytes) but never replaces a copy: which side changed is not for it to decide.
    const alerts: { Message?: string }[] = [];
    const failed = await runStateMachine(synth.stateMachine('replication'), replicationBindings(alerts), {
      verify: true,
    }).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect(alerts.map((a) => a.Message)).toEqual([
      expect.stringMatching(/^Replication to target b2 failed: 2 objects .* 2 are trust violations/),
    ]);
    expect((await buffer(await b2.storage.get(dumpKey))).equals(corrupt)).toBe(true);
    expect((await buffer(await b2.storage.get(walObject))).equals(corruptWal)).toBe(true);

    // Once someone removed the bad copies, the next run copies them again.
    await b2.storage.delete(dumpKey);
    await b2.storage.delete(walObject);
    expect(await replicate()).toMatchObject([
      { target: 'dr-aws', status: 'ok', objectsCopied: 0 },
      { target: 'b2', status: 'ok', objectsCopied: 2, bytesCopied: largeDump.length + wal.length },
    ]);
    await expectIdenticalCopies();
  });

  it('a provider that is down for a whole run fails only its branch with an alert; the next run catches up', async () => {
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
    expect(await replicate()).toMatchObject([
      { target: 'dr-aws', status: 'ok', objectsCopied: 0, objectsSkipped: 13 },
      { target: 'b2', status: 'ok', objectsCopied: 2, objectsSkipped: 11, lagSeconds: 0 },
    ]);
    await expectIdenticalCopies();
  });

  it('a provider killed mid-copy fails its branch; back for the next run, that run completes with no gap', async () => {
    const dump = randomBytes(11 * MIB);
    await writeLogicalBackup(MULTI, '2026-11-21T03:05:00.000Z', dump);
    const alerts: { Message?: string }[] = [];
    // Kill the provider as soon as the multipart upload of the 11 MiB dump has started there.
    let killed = false;
    const watcher = (async () => {
      for (let i = 0; i < 2000 && !killed; i++) {
        if ((await provider.openUploads('offsite')).length > 0) {
          await provider.kill();
          killed = true;
        } else await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    let failed: unknown;
    try {
      failed = await runStateMachine(
        synth.stateMachine('replication'),
        replicationBindings(alerts),
        {},
      ).catch((error: unknown) => error);
      killed = true;
      await watcher;
    } finally {
      await provider.restart();
    }
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect(alerts.map((a) => a.Message)).toEqual([
      expect.stringMatching(/^Replication to target b2 failed: /),
    ]);
    const b2 = await locations.target(env.targets[1]!);
    expect(await keysOf(b2)).not.toContain(manifestKey(CLUSTER, MULTI));
    expect(await keysOf(b2)).not.toContain(logicalDumpKey(CLUSTER, 'shop', MULTI));

    await writeLogicalBackup(NEWEST, '2026-11-21T04:05:00.000Z');
    expect(await replicate()).toMatchObject([
      { target: 'dr-aws', status: 'ok', objectsCopied: 1, objectsFailed: 0, manifestsCopied: 1 },
      { target: 'b2', status: 'ok', objectsCopied: 2, objectsFailed: 0, manifestsCopied: 2, lagSeconds: 0 },
    ]);
    await expectIdenticalCopies({ openUploadsExpected: true });
    // The killed copy's upload could not be aborted while the provider was down: it stays until a
    // run at least 3 hours later aborts it (abortStaleUploads, test/lambdas/replication/), which
    // needs a provider that lists multipart uploads; s3rver does not, so here it may stay (when the
    // plan step copied the dump itself, the kill can land before the upload is registered).
    expect((await provider.openUploads('offsite')).length).toBeLessThanOrEqual(1);
    expect(await aws.openUploads('dr')).toEqual([]);
  });
});

describe('retention state machine with the real handlers and planner', () => {
  const policy = { minimumKeep: 1, keepLast: 1 };
  const dropped = [OLD, NEW, LARGE, MULTI].flatMap((id) => [
    manifestKey(CLUSTER, id),
    logicalDumpKey(CLUSTER, 'shop', id),
  ]);
  /** The OLD dump on b2 is under Object Lock (s3rver has no Object Lock: the lock reader stands in). */
  const lockedOnB2 = logicalDumpKey(CLUSTER, 'shop', OLD);
  function retain(input: unknown, attempted: string[] = []) {
    return runStateMachine(
      synth.stateMachine('retention'),
      retentionBindings(env, locations, { 'dr-aws': policy, b2: policy }, [], {
        lockOf: async (location, key) => location.name === 'b2' && key === lockedOnB2,
        onDelete: (i) => {
          const { target, batch } = i as { target: string; batch: { keys: string[] } };
          attempted.push(...batch.keys.map((k) => `${target}:${k}`));
        },
      }),
      input,
    );
  }

  it('a dry run lists what it would delete and why, and deletes nothing', async () => {
    const before = await Promise.all(env.targets.map(async (t) => keysOf(await locations.target(t))));
    const attempted: string[] = [];
    const run = await retain({ dryRun: true }, attempted);
    expect(attempted).toEqual([]);
    expect(await Promise.all(env.targets.map(async (t) => keysOf(await locations.target(t))))).toEqual(
      before,
    );
    const [dr] = (
      run.output as { targets: { deleted: { count: number; first: { key: string; reason: string }[] } }[] }
    ).targets;
    expect(run.output).toMatchObject({
      targets: [
        { target: 'dr-aws', dryRun: true, kept: 1, expired: 4 },
        { target: 'b2', dryRun: true },
      ],
    });
    expect(dr?.deleted.count).toBe(8);
    expect(dr?.deleted.first.map((d) => d.key).sort()).toEqual([...dropped].sort());
    for (const d of dr?.deleted.first ?? []) expect(d.reason).not.toBe('');
  });

  it('deletes what the policy drops from each target (manifest first), never from ingest, never a locked object', async () => {
    const attempted: string[] = [];
    const run = await retain({}, attempted);
    expect(attempted).not.toContain(`b2:${lockedOnB2}`);
    expect(attempted).toContain(`dr-aws:${lockedOnB2}`);
    const targets = (run.output as { anyFailed: boolean; targets: Record<string, unknown>[] }).targets;
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        {
          target: 'dr-aws',
          status: 'ok',
          dryRun: false,
          kept: 1,
          expired: 4,
          deleted: { count: 8 },
          locked: { count: 0 },
        },
        // The OLD backup has a locked object: left whole and reported.
        {
          target: 'b2',
          status: 'ok',
          dryRun: false,
          kept: 1,
          expired: 3,
          deleted: { count: 6 },
          locked: { count: 1 },
        },
      ],
    });
    expect((targets[1]?.locked as { first: { key: string; reason: string }[] } | undefined)?.first).toEqual([
      { key: lockedOnB2, reason: expect.stringMatching(/Object Lock/) },
    ]);
    const ingestKeys = await keysOf(await locations.ingest());
    const [drKeys, b2Keys] = await Promise.all(
      env.targets.map(async (t) => keysOf(await locations.target(t))),
    );
    expect(drKeys).toEqual(ingestKeys.filter((k) => !dropped.includes(k)));
    const keptOnB2 = [manifestKey(CLUSTER, OLD), lockedOnB2];
    expect(b2Keys).toEqual(ingestKeys.filter((k) => !dropped.includes(k) || keptOnB2.includes(k)));
    expect(ingestKeys).toEqual(expect.arrayContaining(dropped));
  });
});

describe('verification handlers', () => {
  it('pick the newest backup with its major version, and record the report the task wrote', async () => {
    const now = new Date('2026-11-22T05:00:00Z');
    const picked = await pickBackup({}, env, locations, now);
    expect(picked).toEqual({
      cluster: CLUSTER,
      backupId: NEWEST,
      manifestKey: manifestKey(CLUSTER, NEWEST),
      kind: 'logical',
      pgMajor: 17,
      runId: `20261122T050000Z-${NEWEST}`,
      reportKey: verifyReportKey(CLUSTER, `20261122T050000Z-${NEWEST}`),
      source: 'ingest',
      repository: 's3://ingest/?region=us-east-1',
      sourceSecretArn: '',
    });

    // No report: the task's exit status proves nothing.
    expect(await recordResult({ backup: picked as never }, locations)).toMatchObject({
      passed: false,
      summary: expect.stringContaining('ended without writing its report'),
    });
    await put(
      await locations.ingest(),
      picked.reportKey,
      JSON.stringify({
        format: 'pgkeep.verify-report.v1',
        runId: picked.runId,
        cluster: CLUSTER,
        backupId: NEWEST,
        mode: 'logical',
        source: 'ingest',
        startedAt: '2026-11-22T05:00:00Z',
        finishedAt: '2026-11-22T05:01:00Z',
        passed: true,
        exitCode: 0,
        summary: 'pg_restore ok, 1 assertion passed',
        checks: [],
      }),
    );
    expect(await recordResult({ backup: picked as never }, locations)).toEqual({
      passed: true,
      summary: `backup ${NEWEST} of cluster ${CLUSTER} from ingest: restore verified: pg_restore ok, 1 assertion passed`,
      reportKey: picked.reportKey,
    });
  });

  it("rotates the source over ingest and every target by the verifier's reports, ignoring any report a host could write", async () => {
    const ingest = await locations.ingest();
    const report = (runId: string, source: string, finishedAt: string) =>
      JSON.stringify({
        format: 'pgkeep.verify-report.v1',
        runId,
        cluster: CLUSTER,
        backupId: NEWEST,
        mode: 'logical',
        source,
        startedAt: finishedAt,
        finishedAt,
        passed: true,
        exitCode: 0,
        summary: 'ok',
        checks: [],
      });
    // The previous test left a report from ingest: the never-verified targets come next, in config order.
    const second = await pickBackup({}, env, locations, new Date('2026-11-23T05:00:00Z'));
    expect(second).toMatchObject({
      source: 'dr-aws',
      repository: 's3://dr/copies/?region=us-east-1',
      sourceSecretArn: '',
    });
    await put(ingest, second.reportKey, report(second.runId, 'dr-aws', '2026-11-23T05:01:00Z'));

    // A host can write only under v1/main/: a "passed" report there, claiming b2 was verified just
    // now, must not make b2 look fresh; nor may a report whose content names another key.
    await put(
      ingest,
      `v1/${CLUSTER}/verify/20261124T000000Z-${NEWEST}.json`,
      report(`20261124T000000Z-${NEWEST}`, 'b2', '2026-11-24T00:01:00Z'),
    );
    await put(
      ingest,
      verifyReportKey(CLUSTER, `20261124T000001Z-${NEWEST}`),
      report('elsewhere', 'b2', '2026-11-24T00:01:00Z'),
    );
    const third = await pickBackup({}, env, locations, new Date('2026-11-24T05:00:00Z'));
    expect(third).toMatchObject({
      source: 'b2',
      backupId: NEWEST,
      sourceSecretArn:
        env.targets[1]?.type === 's3-compatible' ? env.targets[1].credentialsSecretArn : 'missing',
    });
    expect(third.repository).toBe(
      `s3://offsite/?region=us-east-1&endpoint=${encodeURIComponent(provider.endpoint)}&path-style=true`,
    );
    await put(ingest, third.reportKey, report(third.runId, 'b2', '2026-11-24T05:01:00Z'));
    // Every source verified once: ingest is the stalest again.
    expect(await pickBackup({}, env, locations, new Date('2026-11-25T05:00:00Z'))).toMatchObject({
      source: 'ingest',
    });
    // A named source wins over the rotation, and an unknown one is refused naming the known ones.
    expect(await pickBackup({ source: 'b2' }, env, locations)).toMatchObject({ source: 'b2' });
    await expect(pickBackup({ source: 'wasabi' }, env, locations)).rejects.toThrow(
      'unknown source "wasabi"; known sources: ingest, dr-aws, b2',
    );
  });

  it('records a report about another run, backup or source as a failure', async () => {
    const picked = await pickBackup({ source: 'dr-aws' }, env, locations, new Date('2026-11-26T05:00:00Z'));
    await put(
      await locations.ingest(),
      picked.reportKey,
      JSON.stringify({
        format: 'pgkeep.verify-report.v1',
        runId: picked.runId,
        cluster: CLUSTER,
        backupId: NEWEST,
        mode: 'logical',
        source: 'ingest',
        startedAt: '2026-11-26T05:00:00Z',
        finishedAt: '2026-11-26T05:01:00Z',
        passed: true,
        exitCode: 0,
        summary: 'ok',
        checks: [],
      }),
    );
    expect(await recordResult({ backup: picked }, locations)).toMatchObject({
      passed: false,
      summary: expect.stringContaining('has source "ingest", expected "dr-aws"'),
    });
  });

  it('finds nothing to verify in an empty cluster', async () => {
    await expect(pickBackup({}, { ...env, clusters: ['empty'] }, locations)).rejects.toThrow(
      /no backup to verify: no manifest under v1\/empty\/manifests\//,
    );
  });
});
