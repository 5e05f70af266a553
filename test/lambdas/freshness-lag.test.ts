// Freshness reads each target's replication lag from the record replication's rounds leave in
// ingest (pipeline/replication/<target>/lag.json), not from listings per cluster and target. Real
// s3rvers on 127.0.0.1 (ingest, and one per target so a target can go down), each behind a counting
// proxy; replication runs the synthesized state machine with the real handlers. Asserted: the lag
// costs one GET per target whatever the number of clusters and nothing at the targets; it grows
// while replication does not run and when a run fails; after a partial copy it is the age of the
// object left behind; a run that listed earlier and finished later does not hide lag.
import { randomBytes } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicationLagKey, walKey } from '../../core/keys.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { MetricValue } from '../../lambdas/lib/metrics.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { planCopies } from '../../lambdas/replication/plan-copies.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { localPipelineEnv, replicationBindings } from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import { sha256, walName } from '../support/seeded-archive.ts';
import {
  type Execution,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

const CLUSTERS = Array.from({ length: 20 }, (_, i) => `lag-${String(i).padStart(2, '0')}`);
const MINUTE = 60_000;
const servers = new Map<string, S3Server>();
const proxies = new Map<string, FaultProxy>();
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;
let ingest: Location;
const targets = new Map<string, Location>();
let segment = 1;

beforeAll(async () => {
  for (const bucket of ['ingest', 'dr', 'offsite']) {
    const server = await startS3Server({ buckets: [bucket] });
    servers.set(bucket, server);
    proxies.set(bucket, await startFaultProxy(server.endpoint));
  }
  const at = (bucket: string, name: string): Location => ({
    name,
    storage: s3rverStorage((proxies.get(bucket) as FaultProxy).endpoint, bucket),
  });
  ingest = at('ingest', 'ingest');
  targets.set('dr-aws', at('dr', 'dr-aws'));
  targets.set('b2', at('offsite', 'b2'));
  locations = { ingest: async () => ingest, target: async (t) => targets.get(t.name) as Location };
  // Batches of 10: the first run's 40 objects go through the batch Map, the later runs' few new
  // ones are copied by the plan step itself; both record the lag.
  env = { ...localPipelineEnv(CLUSTERS, { drAws: 'dr', b2: 'offsite' }), batchSize: 10 };
  synth = synthPipeline();
}, 120_000);

afterAll(async () => {
  synth?.dispose();
  for (const proxy of proxies.values()) await proxy.stop();
  for (const server of servers.values()) await server.stop();
});

/**
 * New WAL segments in `cluster`, one after another; returns their keys. `storedAt` backdates them
 * (s3rver reports its file's mtime): settled, so the cursors pass them once copied.
 */
/**
 * Waits for the second after the one a listing started in: listings give LastModified in whole
 * seconds, and an object stored in the listing's own second counts as listed (core/replication-lag.ts).
 */
async function afterListingSecond(listedAt: string): Promise<void> {
  const next = Math.floor(Date.parse(listedAt) / 1000) * 1000 + 1000;
  if (Date.now() < next) await new Promise((resolve) => setTimeout(resolve, next - Date.now()));
}

async function pushWal(cluster: string, count: number, spacingMs = 0, storedAt?: Date): Promise<string[]> {
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const body = randomBytes(32);
    const key = walKey(cluster, walName(segment++), sha256(body));
    await ingest.storage.put(key, Readable.from([body]));
    if (storedAt) {
      const file = path.join(
        (servers.get('ingest') as S3Server).directory,
        'ingest',
        `${key}._S3rver_object`,
      );
      await utimes(file, storedAt, storedAt);
    }
    keys.push(key);
    if (spacingMs > 0) await new Promise((resolve) => setTimeout(resolve, spacingMs));
  }
  return keys;
}

async function replicate(): Promise<Execution> {
  return runStateMachine(synth.stateMachine('replication'), replicationBindings(env, locations, []), {
    trigger: 'schedule',
  });
}

/** Each cluster's lag per target, in seconds, measured at `now`. */
async function lags(now: Date, clusters: readonly string[] = CLUSTERS): Promise<Map<string, number>> {
  const { metrics } = await measureFreshness({ ...env, clusters: [...clusters] }, locations, now);
  const out = new Map<string, number>();
  for (const m of metrics.filter((m: MetricValue) => m.name === 'ReplicationLagSeconds'))
    out.set(`${m.dimensions.Cluster}/${m.dimensions.Target}`, m.value);
  return out;
}

/** Requests a freshness run over `clusters` made, by S3 operation, at ingest and at the targets. */
async function countedFreshness(clusters: readonly string[]) {
  const snapshot = () =>
    new Map([...proxies].map(([b, p]) => [b, { ...p.operations, all: p.counts.requests }]));
  const before = snapshot();
  await lags(new Date(), clusters);
  const after = snapshot();
  const delta = (bucket: string, op: string) =>
    ((after.get(bucket) as Record<string, number>)[op] ?? 0) -
    ((before.get(bucket) as Record<string, number>)[op] ?? 0);
  return {
    ingestGets: delta('ingest', 'GET'),
    ingestLists: delta('ingest', 'LIST'),
    ingestAll: delta('ingest', 'all'),
    targetsAll: delta('dr', 'all') + delta('offsite', 'all'),
  };
}

async function lagRecord(
  target: string,
): Promise<{ clusters: Record<string, { listedAt: string; oldestMissing?: string }> }> {
  return JSON.parse(await text(await ingest.storage.get(replicationLagKey(target))));
}

describe("replication lag from replication's own record", () => {
  it('before any run there is no record: the lag comes from comparing listings; after the run it is 0 for every cluster', async () => {
    for (const cluster of CLUSTERS) await pushWal(cluster, 2, 0, new Date(Date.now() - 60 * MINUTE));
    const before = await lags(new Date(Date.now() + MINUTE));
    expect(before.get(`${CLUSTERS[0]}/dr-aws`)).toBeGreaterThan(0);

    const run = await replicate();
    expect(run.statesEntered).toContain('Copy batch to target');
    for (const target of ['dr-aws', 'b2'])
      expect(Object.keys((await lagRecord(target)).clusters).sort()).toEqual(CLUSTERS);
    const after = await lags(new Date(Date.now() + MINUTE));
    expect([...after.values()]).toEqual(Array(2 * CLUSTERS.length).fill(0));
  }, 120_000);

  it('costs one GET per target for the lag whatever the number of clusters, and no request at a target', async () => {
    // A first pass brings freshness's own state up to date, so the counted passes write nothing.
    await lags(new Date());
    const few = await countedFreshness(CLUSTERS.slice(0, 2));
    const all = await countedFreshness(CLUSTERS);
    for (const [n, counted] of [
      [2, few],
      [CLUSTERS.length, all],
    ] as const) {
      // Per cluster: its freshness state (GET) and 3 LIST (manifests, wal/ once, the verification
      // reports): its own walk. The lag: one GET per target, nothing else.
      expect(counted).toEqual({ ingestGets: n + 2, ingestLists: 3 * n, ingestAll: 4 * n + 2, targetsAll: 0 });
    }
  }, 60_000);

  it('grows while no run lists what ingest stored after the last one, and is 0 again once a run copied it', async () => {
    const [cluster, quiet] = CLUSTERS as [string, string];
    const recorded = (await lagRecord('dr-aws')).clusters[cluster]?.listedAt as string;
    const listedAt = Date.parse(recorded);
    await afterListingSecond(recorded);
    await pushWal(cluster, 1);
    const later = await lags(new Date(listedAt + 10 * MINUTE));
    const muchLater = await lags(new Date(listedAt + 70 * MINUTE));
    for (const target of ['dr-aws', 'b2']) {
      expect(later.get(`${cluster}/${target}`)).toBe(10 * 60);
      expect(muchLater.get(`${cluster}/${target}`)).toBe(70 * 60);
      // A cluster that stored nothing since has no lag.
      expect(muchLater.get(`${quiet}/${target}`)).toBe(0);
    }
    const run = await replicate();
    expect(run.statesEntered).not.toContain('Copy batch to target');
    const caughtUp = await lags(new Date(Date.now() + MINUTE));
    expect(caughtUp.get(`${cluster}/dr-aws`)).toBe(0);
    expect(caughtUp.get(`${cluster}/b2`)).toBe(0);
  }, 120_000);

  it("a run that fails for a target leaves that target's record as it was: its lag keeps growing", async () => {
    const cluster = CLUSTERS[1] as string;
    const before = await lagRecord('b2');
    await afterListingSecond(before.clusters[cluster]?.listedAt as string);
    await pushWal(cluster, 1);
    const offsite = servers.get('offsite') as S3Server;
    await offsite.kill();
    try {
      await expect(replicate()).rejects.toMatchObject({ error: 'ReplicationFailed' });
    } finally {
      await offsite.restart();
    }
    expect(await lagRecord('b2')).toEqual(before);
    const listedAt = Date.parse(before.clusters[cluster]?.listedAt as string);
    const soon = await lags(new Date(listedAt + 20 * MINUTE));
    const later = await lags(new Date(listedAt + 80 * MINUTE));
    expect(soon.get(`${cluster}/b2`)).toBe(20 * 60);
    expect(later.get(`${cluster}/b2`)).toBe(80 * 60);
    // The other target was replicated by the same run.
    expect(later.get(`${cluster}/dr-aws`)).toBe(0);
    await replicate();
    expect((await lags(new Date(Date.now() + MINUTE))).get(`${cluster}/b2`)).toBe(0);
  }, 180_000);

  it("a run that listed earlier and finished later does not replace a later listing's record", async () => {
    const cluster = CLUSTERS[2] as string;
    const before = (await lagRecord('dr-aws')).clusters[cluster];
    // A round that started listing half an hour ago (a long run beside the scheduled ones) ends now.
    await planCopies({ target: 'dr-aws' }, env, locations, {}, new Date(Date.now() - 30 * MINUTE));
    expect((await lagRecord('dr-aws')).clusters[cluster]).toEqual(before);
  }, 60_000);

  it('after a partial copy the lag is the age of the oldest object left behind, not of the oldest copied', async () => {
    const cluster = CLUSTERS[3] as string;
    // Three segments over a few seconds; the target already holds other bytes at the second one's
    // key (kept, never replaced: it fails its check), so only the first and third are copied.
    const keys = await pushWal(cluster, 3, 1_200);
    const dr = targets.get('dr-aws') as Location;
    await dr.storage.put(keys[1] as string, Readable.from([Buffer.from('other bytes')]));
    const stored = new Map<string, Date>();
    for await (const object of ingest.storage.list(walKey(cluster, '', '').split('/').slice(0, 3).join('/')))
      stored.set(object.key, object.lastModified);
    const run = await replicate().catch((error: { statesEntered: string[] }) => error);
    // Copied by the plan step itself, the failed check alerts.
    expect(run.statesEntered).toContain('Alert replication failure');
    expect(run.statesEntered).not.toContain('Copy batch to target');
    for (const key of [keys[0], keys[2]]) expect(await dr.storage.head(key as string)).toBeDefined();

    const now = new Date(Date.now() + MINUTE);
    const lag = (await lags(now)).get(`${cluster}/dr-aws`) as number;
    const ageOf = (key: string) => (now.getTime() - (stored.get(key) as Date).getTime()) / 1000;
    // Ingest's HEAD gives the copy step the time to the second: up to a second more than the listing's.
    expect(lag).toBeGreaterThanOrEqual(ageOf(keys[1] as string));
    expect(lag).toBeLessThan(ageOf(keys[1] as string) + 1);
    expect(lag).toBeLessThan(ageOf(keys[0] as string));
    expect((await lags(now)).get(`${cluster}/b2`)).toBe(0);
  }, 120_000);
});
