// Failures on the pipeline side, with the real parts: a PostgreSQL cluster archiving through the
// bundled agent into an s3rver "ingest" behind the fault proxy, a target s3rver, and the
// synthesized replication and retention state machines running the real handlers.
// - Retention runs while a base backup is in progress (its objects stored, its manifest held back
//   by the proxy): nothing of that backup nor the WAL it needs is deleted, and once it finishes a
//   PITR from the target's copy alone works.
// - A deletion in ingest (an object and a manifest) is never propagated: the target keeps both.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifestKey } from '../../core/keys.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { archiveSettings, type Harness, makeHarness, waitPromoted } from '../agent/wal/harness.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { localPipelineEnv, replicationBindings, retentionBindings } from '../support/local-pipeline.ts';
import { type PgCluster, startCluster, startExistingCluster } from '../support/pg-cluster.ts';
import { S3RVER_CREDENTIALS, type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import {
  type ExecutionFailed,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

const CLUSTER = 'faults';
const awsKey = {
  AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
};
/** How long the proxy holds the in-progress backup's manifest PUT: the window the pipeline runs in. */
const HOLD_MS = 25_000;
const policy: RetentionPolicy = { minimumKeep: 1, keepLast: 1 };

let ingestServer: S3Server;
let targetServer: S3Server;
let proxy: FaultProxy;
let synth: SynthesizedPipeline;
let h: Harness;
let primary: PgCluster | undefined;
let restored: PgCluster | undefined;
let ingest: Location;
let target: Location;
let locations: LocationFactory;
let env: PipelineEnv;

beforeAll(async () => {
  [ingestServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['dr-copy', 'b2-copy'] }),
  ]);
  proxy = await startFaultProxy(ingestServer.endpoint, 15);
  synth = synthPipeline();
  ingest = { name: 'ingest', storage: s3rverStorage(ingestServer.endpoint, 'ingest') };
  target = { name: 'dr-aws', storage: s3rverStorage(targetServer.endpoint, 'dr-copy') };
  const target2: Location = { name: 'b2', storage: s3rverStorage(targetServer.endpoint, 'b2-copy') };
  locations = { ingest: async () => ingest, target: async (t) => (t.name === 'b2' ? target2 : target) };
  // The synthesized machines replicate to the example config's targets, dr-aws and b2.
  env = localPipelineEnv([CLUSTER], { drAws: 'dr-copy', b2: 'b2-copy' });
  h = await makeHarness(CLUSTER, {
    repository: `s3://ingest/?endpoint=${encodeURIComponent(proxy.endpoint)}&path-style=true&region=us-east-1`,
  });
});

afterAll(async () => {
  await restored?.destroy().catch(() => {});
  await primary?.destroy().catch(() => {});
  synth?.dispose();
  await proxy?.stop();
  await Promise.all([ingestServer?.stop(), targetServer?.stop()]);
  if (h) await rm(h.dir, { recursive: true, force: true });
});

const policies = { 'dr-aws': policy, b2: policy };

async function keysAt(location: Location, prefix = `v1/${CLUSTER}/`): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of location.storage.list(prefix)) keys.push(object.key);
  return keys;
}

async function replicate(input: unknown = {}, known: Record<string, RetentionPolicy> = policies) {
  const alerts: { Message?: string }[] = [];
  const run = await runStateMachine(
    synth.stateMachine('replication'),
    replicationBindings(env, locations, alerts, known),
    input,
  ).catch((error: unknown) => error as ExecutionFailed);
  return { run, alerts, failed: 'error' in run ? run.error : undefined };
}

async function retain() {
  const alerts: unknown[] = [];
  const run = await runStateMachine(
    synth.stateMachine('retention'),
    retentionBindings(env, locations, policies, alerts),
    {},
  );
  expect(alerts).toEqual([]);
  return (run.output as { targets: { deleted: { count: number } }[] }).targets[0];
}

async function basebackup(): Promise<void> {
  const result = await h.pgkeep(['basebackup'], { ...awsKey, ...primary?.env });
  expect(result.code, result.stderr).toBe(0);
}

/** Ends the current WAL segment and waits until the agent archived it into ingest. */
async function switchWal(cluster: PgCluster): Promise<string> {
  const name = await cluster.sql('select pg_walfile_name(pg_switch_wal())');
  const deadline = Date.now() + 60_000;
  while (!(await keysAt(ingest, `v1/${CLUSTER}/wal/`)).some((k) => k.includes(name))) {
    if (Date.now() > deadline) throw new Error(`WAL ${name} not archived:\n${primary?.log().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return name;
}

const baseIds = (keys: string[]) =>
  [...new Set(keys.flatMap((k) => /\/base\/([^/]+)\//.exec(k)?.[1] ?? []))].sort();

describe('pipeline faults with a real cluster', () => {
  it('retention while a base backup is in progress deletes nothing of it nor its WAL; PITR from the target works after', async () => {
    primary = await startCluster({ settings: archiveSettings(h), serverEnv: awsKey });
    await primary.sql("create table t (v text); insert into t values ('first')");
    // Two complete backups, so a keep-last-1 policy has one to drop.
    await basebackup();
    await primary.sql("insert into t values ('second')");
    await switchWal(primary);
    await basebackup();
    const [oldest, kept] = baseIds(await keysAt(ingest));
    expect(kept).toBeDefined();
    await switchWal(primary);
    // A target filled before the policy was known to replication, which never copies what the
    // policy drops: the oldest backup and the WAL before the kept one are there for retention.
    expect((await replicate({}, {})).failed).toBeUndefined();

    // The third backup's manifest PUT is held: its objects are stored, the backup does not yet exist.
    proxy.set({ method: 'PUT', path: /\/manifests\//, latencyMs: HOLD_MS });
    const running = h.pgkeep(['basebackup'], { ...awsKey, ...primary.env });
    let inProgress: string | undefined;
    const deadline = Date.now() + HOLD_MS;
    while (!inProgress) {
      if (Date.now() > deadline) throw new Error('the third base backup stored no object in time');
      inProgress = baseIds(await keysAt(ingest)).find((id) => id !== oldest && id !== kept);
      await new Promise((r) => setTimeout(r, 100));
    }
    await primary.sql("insert into t values ('during')");
    // Its objects (and the WAL segments written since it started) are complete in ingest once the
    // agent asks for the manifest; wait for that PUT to reach the proxy.
    while (proxy.counts.delayed === 0) await new Promise((r) => setTimeout(r, 100));
    const walDuring = await switchWal(primary);
    expect(await keysAt(ingest)).not.toContain(manifestKey(CLUSTER, inProgress));

    // The reconciliation compares whole listings, so it copies the unfinished backup's objects too
    // (the cursor path waits for its manifest): the case where retention sees them at the target.
    const replicated = await replicate({ reconcile: true });
    expect(replicated.failed, JSON.stringify(replicated.alerts)).toBeUndefined();
    const before = await keysAt(target);
    const ofInProgress = before.filter((k) => k.includes(`/base/${inProgress}/`));
    expect(ofInProgress.length).toBeGreaterThan(0);
    expect(before).not.toContain(manifestKey(CLUSTER, inProgress));
    const walBefore = before.filter((k) => k.includes('/wal/'));
    expect(walBefore.some((k) => k.includes(walDuring))).toBe(true);

    const plan = await retain();
    const after = await keysAt(target);
    // The tight policy did run: the oldest complete backup is gone from the target ...
    expect(plan?.deleted.count).toBeGreaterThan(0);
    expect(after).not.toContain(manifestKey(CLUSTER, oldest!));
    // ... but every object of the backup in progress, and the WAL since the kept one, is still there.
    for (const key of ofInProgress) expect(after).toContain(key);
    expect(after).toContain(manifestKey(CLUSTER, kept!));
    const keptManifest = JSON.parse(
      (await buffer(await target.storage.get(manifestKey(CLUSTER, kept!)))).toString(),
    );
    const segment = (k: string) => k.split('/').pop()!.slice(0, 24);
    for (const key of walBefore.filter((k) => segment(k) >= keptManifest.startWalFile)) {
      expect(after).toContain(key);
    }
    // WAL before the kept backup's start did go: the WAL rule ran, it only spared what is needed.
    const older = walBefore.filter((k) => segment(k) < keptManifest.startWalFile);
    expect(older.length).toBeGreaterThan(0);
    for (const key of older) expect(after).not.toContain(key);

    // The backup finishes; the next replication copies its manifest and the WAL after it.
    const finished = await running;
    expect(finished.code, finished.stderr).toBe(0);
    proxy.set({});
    await primary.sql("insert into t values ('after')");
    await switchWal(primary);
    expect((await replicate()).failed).toBeUndefined();
    expect(await keysAt(target)).toContain(manifestKey(CLUSTER, inProgress));
    await primary.stop();

    // PITR from the target's copy alone (ingest is not named anywhere).
    const dir = join(h.dir, 'restored', 'data');
    const targetEnv = { PGKEEP_REPOSITORY: targetServer.url('dr-copy'), ...awsKey };
    const restore = await h.pgkeep(['restore', '--pgdata', dir, '--backup', inProgress], targetEnv);
    expect(restore.code, restore.stderr).toBe(0);
    restored = await startExistingCluster(dir, { settings: { archive_mode: 'off' }, serverEnv: targetEnv });
    await waitPromoted(restored);
    expect(await restored.sql("select string_agg(v, ',' order by v) from t")).toBe(
      'after,during,first,second',
    );
  });

  it('a deletion in ingest is not propagated: the target keeps the object and the manifest', async () => {
    // Objects both sides hold (retention already dropped the oldest backup's from the target).
    const atTarget = await keysAt(target);
    const all = (await keysAt(ingest)).filter((k) => atTarget.includes(k));
    const wal = all.filter((k) => k.includes('/wal/')).pop()!;
    const manifest = all
      .filter((k) => k.includes('/manifests/'))
      .sort()
      .pop()!;
    const copies = await Promise.all([wal, manifest].map(async (k) => buffer(await target.storage.get(k))));
    await ingest.storage.delete(wal);
    await ingest.storage.delete(manifest);
    for (const input of [{}, { verify: true }]) {
      const { failed, alerts } = await replicate(input);
      expect(failed, JSON.stringify(alerts)).toBeUndefined();
      const kept = await Promise.all([wal, manifest].map(async (k) => buffer(await target.storage.get(k))));
      expect(kept).toEqual(copies);
    }
    // Put back, nothing changes either.
    await ingest.storage.put(wal, Readable.from([copies[0]!]));
    expect((await replicate()).failed).toBeUndefined();
  });
});
