// A fully compromised database host attacks the pipeline with what it has: write access to its own
// prefix v1/<cluster>/ in ingest. Each test is written as that attacker, against the real handlers
// run by the synthesized state machines, an s3rver ingest and an s3rver target. The pipeline must
// never propagate what the host changed, never delete because of what it forged, never let a burst
// of forged backups push out a kept one, never let its reports vouch for a backup, and never undo
// retention by copying back what retention deleted (docs/architecture.md, "Trust model").
import { createHash } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  baseBackupKey,
  logicalDumpKey,
  manifestKey,
  newBackupId,
  verifyReportKey,
  walKey,
} from '../../core/keys.ts';
import { serializeManifest } from '../../core/manifest.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import { trustViolationMetrics } from '../../lambdas/lib/metrics.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { deleteBatch } from '../../lambdas/retention/delete-batch.ts';
import { localPipelineEnv, replicationBindings, retentionBindings } from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import {
  type ExecutionFailed,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';
import { manifestOf } from '../support/test-manifests.ts';

const DAY = 24 * 60 * 60 * 1000;
let ingestServer: S3Server;
let targetServer: S3Server;
let synth: SynthesizedPipeline;
let ingest: Location;
let target: Location;
let target2: Location;
let locations: LocationFactory;

beforeAll(async () => {
  [ingestServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    // Honours If-None-Match: * like AWS S3, so dr-aws copies with create-only PutObjects (no HEAD
    // first); b2 is left to HEAD first, as a provider configured without conditional writes.
    startS3Server({ buckets: ['offsite', 'offsite2'], conditionalWrites: true }),
  ]);
  synth = synthPipeline();
  ingest = { name: 'ingest', storage: s3rverStorage(ingestServer.endpoint, 'ingest') };
  // The synthesized machines replicate to the example config's targets, dr-aws and b2; the tests
  // look at dr-aws.
  target = {
    name: 'dr-aws',
    storage: s3rverStorage(targetServer.endpoint, 'offsite'),
    conditionalWrites: true,
  };
  target2 = { name: 'b2', storage: s3rverStorage(targetServer.endpoint, 'offsite2') };
  locations = { ingest: async () => ingest, target: async (t) => (t.name === 'b2' ? target2 : target) };
});

afterAll(async () => {
  synth?.dispose();
  await Promise.all([ingestServer?.stop(), targetServer?.stop()]);
});

/** The pipeline's settings with only `clusters` configured, so each test has its own. */
function envFor(...clusters: string[]): PipelineEnv {
  return localPipelineEnv(clusters, { drAws: 'offsite', b2: 'offsite2' });
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** What the host does: PutObject under its own prefix (s3rver, like an unversioned provider, lets it overwrite). */
async function hostPut(key: string, body: Buffer | string): Promise<void> {
  await ingest.storage.put(key, Readable.from([Buffer.from(body)]));
}

/** Sets when ingest "stored" `key` (its LastModified): s3rver reports the file's mtime. */
async function storedAt(key: string, time: Date): Promise<void> {
  const parts = key.split('/');
  const name = `${parts.pop()}._S3rver_object`;
  await utimes(path.join(ingestServer.directory, 'ingest', ...parts, name), time, time);
}

async function keysAt(location: Location, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of location.storage.list(prefix)) keys.push(object.key);
  return keys;
}

const bytesAt = async (location: Location, key: string) => buffer(await location.storage.get(key));

/** A logical backup of database "shop" as the agent writes it: the dump, then the manifest; stored at `at`. */
async function logicalBackup(cluster: string, backupId: string, at: Date): Promise<string[]> {
  const body = Buffer.from(`dump ${cluster} ${backupId}`);
  const dump = logicalDumpKey(cluster, 'shop', backupId);
  await hostPut(dump, body);
  const key = manifestKey(cluster, backupId);
  const manifest = manifestOf(cluster, backupId, at.toISOString(), [{ key: dump, role: 'dump', body }]);
  await hostPut(key, serializeManifest(manifest));
  await storedAt(dump, at);
  await storedAt(key, at);
  return [dump, key];
}

function walName(segment: number): string {
  return `00000001000000000000${segment.toString(16).toUpperCase().padStart(4, '0')}`;
}

async function wal(cluster: string, segment: number, at: Date): Promise<string> {
  const body = Buffer.from(`wal ${cluster} ${segment}`);
  const key = walKey(cluster, walName(segment), sha256(body));
  await hostPut(key, body);
  await storedAt(key, at);
  return key;
}

async function baseBackup(
  cluster: string,
  backupId: string,
  startSegment: number,
  at: Date,
): Promise<string[]> {
  const body = Buffer.from(`base ${cluster} ${backupId}`);
  const archive = baseBackupKey(cluster, backupId, 'base');
  await hostPut(archive, body);
  const key = manifestKey(cluster, backupId);
  const manifest = manifestOf(cluster, backupId, at.toISOString(), [{ key: archive, role: 'base', body }], {
    startWalFile: walName(startSegment),
    stopWalFile: walName(startSegment),
  });
  await hostPut(key, serializeManifest(manifest));
  await storedAt(archive, at);
  await storedAt(key, at);
  return [archive, key];
}

/** The same policy on both targets. */
const both = (policy: RetentionPolicy) => ({ 'dr-aws': policy, b2: policy });

type Output = { targets: Record<string, unknown>[] };
async function replicate(env: PipelineEnv, policies: Record<string, RetentionPolicy>, input: unknown = {}) {
  const alerts: { Message?: string }[] = [];
  const run = await runStateMachine(
    synth.stateMachine('replication'),
    replicationBindings(env, locations, alerts, policies),
    input,
  ).catch((error: unknown) => error as ExecutionFailed);
  return { run, alerts, failed: 'error' in run ? run.error : undefined };
}

/** Replicates and expects the run to succeed (the alert says why when it does not). */
async function replicatesOk(env: PipelineEnv, policies: Record<string, RetentionPolicy>) {
  const result = await replicate(env, policies);
  expect(result.failed, JSON.stringify(result.alerts)).toBeUndefined();
  return result;
}

async function retain(env: PipelineEnv, policy: RetentionPolicy, input: unknown = {}) {
  const alerts: unknown[] = [];
  const run = await runStateMachine(
    synth.stateMachine('retention'),
    retentionBindings(env, locations, both(policy), alerts),
    input,
  );
  expect(alerts).toEqual([]);
  return (run.output as Output).targets[0] as {
    deleted: { count: number; first: { key: string }[] };
    rejected: { count: number; first: { key: string; reason: string }[] };
  };
}

describe('a compromised host against the pipeline', () => {
  it('a source object the host changed is never propagated: the first copy stays, and the run reports and alerts', async () => {
    const env = envFor('tamper');
    const now = Date.now();
    const walKeys = [
      await wal('tamper', 1, new Date(now - DAY)),
      await wal('tamper', 2, new Date(now - DAY)),
    ];
    const [dump] = await logicalBackup('tamper', newBackupId(new Date(now - DAY)), new Date(now - DAY));
    await replicatesOk(env, {});
    const good = await Promise.all([...walKeys, dump!].map((k) => bytesAt(target, k)));

    // The host overwrites a WAL segment (another size) and the dump (same size, other bytes).
    await hostPut(walKeys[0]!, 'garbage from the host');
    await hostPut(dump!, Buffer.alloc(good[2]!.length, 0x41));
    // And writes a new backup, then swaps its dump after the manifest recorded the real hash.
    const lateId = newBackupId(new Date(now));
    const [lateDump, lateManifest] = await logicalBackup('tamper', lateId, new Date(now));
    await hostPut(lateDump!, Buffer.alloc((await bytesAt(ingest, lateDump!)).length, 0x42));

    // The hot path looks only at what is new: the swapped late dump fails its check, not copied.
    const hot = await replicate(env, {}, {});
    expect(hot.failed).toBe('ReplicationFailed');
    expect(await keysAt(target, 'v1/tamper/')).not.toContain(lateDump);
    // Old keys the host overwrote are found by the full comparison: the daily reconciliation, a verify run.
    for (const input of [{ reconcile: true }, { verify: true }]) {
      const { failed, alerts } = await replicate(env, {}, input);
      expect(failed).toBe('ReplicationFailed');
      expect(alerts).toHaveLength(2);
      for (const alert of alerts) {
        expect(alert.Message).toMatch(/trust violations/);
        expect(alert.Message).toContain(walKeys[0]);
      }
      expect(await Promise.all([...walKeys, dump!].map((k) => bytesAt(target, k)))).toEqual(good);
      const atTarget = await keysAt(target, 'v1/tamper/');
      expect(atTarget).not.toContain(lateDump);
      expect(atTarget).not.toContain(lateManifest);
    }
  });

  it('a forged manifest listing another cluster’s dump and its own WAL deletes nothing, and the run alerts', async () => {
    const env = envFor('acme', 'bank');
    const now = Date.now();
    const bankKeys = await logicalBackup(
      'bank',
      newBackupId(new Date(now - 3 * DAY)),
      new Date(now - 3 * DAY),
    );
    const walKeys = [
      await wal('acme', 1, new Date(now - 2 * DAY)),
      await wal('acme', 2, new Date(now - 2 * DAY)),
    ];
    const acmeKeys = await logicalBackup(
      'acme',
      newBackupId(new Date(now - 2 * DAY)),
      new Date(now - 2 * DAY),
    );
    await replicatesOk(env, {});

    // Host "acme" writes manifests in its own prefix that name bank's dump and its own WAL, and one
    // that claims to be bank's backup.
    const forgedId = newBackupId(new Date(now), () => 0.5);
    const forged = manifestOf('acme', forgedId, new Date(now).toISOString(), [
      { key: bankKeys[0]!, role: 'dump', body: Buffer.from('x') },
      { key: walKeys[0]!, role: 'dump', body: Buffer.from('x') },
    ]);
    await hostPut(manifestKey('acme', forgedId), serializeManifest(forged));
    const posingId = newBackupId(new Date(now), () => 0.75);
    const posing = manifestOf('bank', posingId, new Date(now).toISOString(), [
      { key: logicalDumpKey('bank', 'shop', posingId), role: 'dump', body: Buffer.from('x') },
    ]);
    await hostPut(manifestKey('acme', posingId), serializeManifest(posing));
    const forgedKeys = [manifestKey('acme', forgedId), manifestKey('acme', posingId)];
    // Stored long ago, so that a manifest taken at its word would be the expired one, whose keys go.
    for (const key of forgedKeys) await storedAt(key, new Date(now - 10 * DAY));

    // Replication refuses to copy them, alerts naming them, and copies nothing they name.
    const before = await keysAt(target, 'v1/');
    const policy = { minimumKeep: 1, keepLast: 1 };
    const { failed, alerts } = await replicate(env, both(policy));
    expect(failed).toBe('ReplicationFailed');
    for (const key of forgedKeys) expect(alerts[0]?.Message).toContain(key);
    expect(await keysAt(target, 'v1/')).toEqual(before);

    // Placed at the target directly (as an older pipeline would have copied them), retention
    // rejects them there too, reports them for the alarm, and deletes nothing.
    await target.storage.put(forgedKeys[0]!, Readable.from([serializeManifest(forged)]));
    await target.storage.put(forgedKeys[1]!, Readable.from([serializeManifest(posing)]));
    const plan = await retain(env, policy);
    expect(plan.deleted.count).toBe(0);
    expect(plan.rejected.count).toBe(2);
    expect(plan.rejected.first.map((r) => r.key).sort()).toEqual([...forgedKeys].sort());
    expect(plan.rejected.first.map((r) => r.reason).join('\n')).toMatch(/not the key of that role/);
    expect(plan.rejected.first.map((r) => r.reason).join('\n')).toMatch(/names cluster "bank"/);
    expect(trustViolationMetrics('retention', plan.rejected.count)).toEqual([
      { name: 'TrustViolations', value: 2, unit: 'Count', dimensions: { Step: 'retention' } },
    ]);
    const after = await keysAt(target, 'v1/');
    for (const key of [...bankKeys, ...walKeys, ...acmeKeys]) expect(after).toContain(key);

    // "Delete expired batch" refuses a key outside the cluster the batch was planned for.
    await expect(
      deleteBatch(
        { target: 'offsite', batch: { cluster: 'acme', keys: [walKeys[1]!, bankKeys[0]!] } },
        env,
        locations,
      ),
    ).rejects.toThrow(/refusing to delete v1\/bank\/.*planned for cluster "acme".*nothing was deleted/);
    await expect(
      deleteBatch(
        { target: 'dr-aws', batch: { cluster: 'acme', keys: [walKeys[1]!, `v1/acme/../${bankKeys[0]}`] } },
        env,
        locations,
      ),
    ).rejects.toThrow(/invalid object key .*has a "\.\." segment/);
    expect(await keysAt(target, 'v1/')).toEqual(expect.arrayContaining([walKeys[1], bankKeys[0]]));
  });

  it('a burst of 50 forged recent manifests does not remove a backup kept by keep-daily', async () => {
    const env = envFor('daily');
    const now = Date.now();
    const policy = { minimumKeep: 1, keepDaily: 4 };
    const real: string[][] = [];
    for (const days of [3, 2, 1]) {
      const at = new Date(now - days * DAY);
      real.push(await logicalBackup('daily', newBackupId(at), at));
    }
    await replicatesOk(env, both(policy));

    // 50 backups claiming, by their ids and times, one per day over the last 50 days; the server
    // stores them all now.
    for (let i = 0; i < 50; i++) {
      const claimed = new Date(now - i * DAY + 60_000);
      const id = newBackupId(claimed);
      const body = Buffer.from(`forged ${i}`);
      const dump = logicalDumpKey('daily', 'shop', id);
      await hostPut(dump, body);
      await hostPut(
        manifestKey('daily', id),
        serializeManifest(
          manifestOf('daily', id, claimed.toISOString(), [{ key: dump, role: 'dump', body }]),
        ),
      );
    }
    await replicatesOk(env, both(policy));
    await retain(env, policy);
    const left = await keysAt(target, 'v1/daily/');
    for (const keys of real) for (const key of keys) expect(left).toContain(key);
  });

  it('retention, then replication, then retention: the target holds exactly what the policy keeps, every time', async () => {
    const env = envFor('conv');
    const now = Date.now();
    const policy = { minimumKeep: 1, keepLast: 1 };
    const at = (days: number) => new Date(now - days * DAY);
    const oldLogical = await logicalBackup('conv', newBackupId(at(4)), at(4));
    const oldBase = await baseBackup('conv', newBackupId(at(4)), 1, at(4));
    const oldWal = [await wal('conv', 1, at(4)), await wal('conv', 2, at(3))];
    const newLogical = await logicalBackup('conv', newBackupId(at(2)), at(2));
    const newBase = await baseBackup('conv', newBackupId(at(2)), 3, at(2));
    const newWal = [await wal('conv', 3, at(2)), await wal('conv', 4, at(1))];
    // A target that was filled before the policy dropped anything (no policy known to replication).
    await replicatesOk(env, {});
    expect((await keysAt(target, 'v1/conv/')).length).toBe(12);

    let logical = newLogical;
    const kept = () => [...logical, ...newBase, ...newWal].sort();
    for (let round = 0; round < 2; round++) {
      await retain(env, policy);
      expect(await keysAt(target, 'v1/conv/')).toEqual(kept());
      const { run } = await replicatesOk(env, both(policy));
      expect((run as { output: Output }).output.targets[0]).toMatchObject({
        objectsCopied: 0,
        manifestsCopied: 0,
      });
      expect(await keysAt(target, 'v1/conv/')).toEqual(kept());
      expect((await retain(env, policy)).deleted.count).toBe(0);
      expect(await keysAt(target, 'v1/conv/')).toEqual(kept());
      // What retention deleted is not lag: freshness skips what the policy drops, as replication does.
      const lag = (await measureFreshness(env, locations, new Date(), both(policy))).metrics.filter(
        (m) => m.name === 'ReplicationLagSeconds',
      );
      expect(lag.map((m) => [m.dimensions.Target, m.value])).toEqual([
        ['dr-aws', 0],
        ['b2', 0],
      ]);
      // A newer backup arrives: replication copies it, and the next retention drops the one it replaces.
      const newest = await logicalBackup('conv', newBackupId(at(0.5 - round * 0.1)), at(0.5 - round * 0.1));
      await replicatesOk(env, both(policy));
      logical = newest;
    }
    for (const key of [...oldLogical, ...oldBase, ...oldWal])
      expect(await keysAt(target, 'v1/conv/')).not.toContain(key);
    // Ingest still has everything: only targets are pruned.
    for (const key of [...oldLogical, ...oldBase, ...oldWal])
      expect(await keysAt(ingest, 'v1/conv/')).toContain(key);
  });

  it('the reconciliation copies back what a target lost, and never what its retention deleted between', async () => {
    const env = envFor('span');
    const now = Date.now();
    const policy = { minimumKeep: 1, keepLast: 1 };
    const at = (days: number) => new Date(now - days * DAY);
    const old = [
      ...(await baseBackup('span', newBackupId(at(4)), 1, at(4))),
      await wal('span', 1, at(4)),
      await wal('span', 2, at(3)),
    ];
    const kept = [...(await baseBackup('span', newBackupId(at(2)), 3, at(2))), await wal('span', 3, at(2))];
    const lastWal = await wal('span', 4, at(1));
    await replicatesOk(env, {});
    await retain(env, policy);
    const atTarget = await keysAt(target, 'v1/span/');
    for (const key of old) expect(atTarget).not.toContain(key);
    // The target loses two kept objects: the newest base backup's archive, which sorts before the
    // expired manifest and WAL, and the newest segment, which sorts after them.
    const lost = [kept[0] as string, lastWal];
    for (const key of lost) await target.storage.delete(key);

    const { failed, alerts } = await replicate(env, both(policy), { reconcile: true });
    expect(failed, JSON.stringify(alerts)).toBeUndefined();
    const after = await keysAt(target, 'v1/span/');
    for (const key of lost) expect(after).toContain(key);
    for (const key of old) expect(after).not.toContain(key);
  });

  it('a verification report the host wrote under its own prefix does not keep a backup; one in verify/ does', async () => {
    const env = envFor('vouch');
    const now = Date.now();
    const older = newBackupId(new Date(now - 2 * DAY));
    await logicalBackup('vouch', older, new Date(now - 2 * DAY));
    await logicalBackup('vouch', newBackupId(new Date(now - DAY)), new Date(now - DAY));
    await replicatesOk(env, {});
    const report = (cluster: string) =>
      JSON.stringify({
        format: 'pgkeep.verify-report.v1',
        runId: `r-${older}`,
        cluster,
        backupId: older,
        mode: 'logical',
        source: 'ingest',
        startedAt: new Date(now).toISOString(),
        finishedAt: new Date(now).toISOString(),
        passed: true,
        exitCode: 0,
        summary: 'ok',
        checks: [],
      });
    const policy = { minimumKeep: 1, keepLast: 1 };
    const dropsOlder = async () =>
      (await retain(env, policy, { dryRun: true })).deleted.first.some(
        (d) => d.key === manifestKey('vouch', older),
      );

    await hostPut(`v1/vouch/verify/r-${older}.json`, report('vouch'));
    // In verify/, but naming another cluster: not a report about this one.
    await ingest.storage.put(verifyReportKey('vouch', 'r-other'), Readable.from([report('bank')]));
    expect(await dropsOlder()).toBe(true);
    await ingest.storage.put(verifyReportKey('vouch', `r-${older}`), Readable.from([report('vouch')]));
    expect(await dropsOlder()).toBe(false);
  });
});
