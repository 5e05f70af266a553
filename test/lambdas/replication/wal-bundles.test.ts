/**
 * WAL bundles at replication targets, through the synthesized replication machine with the real
 * handlers on s3rver: each target's requests are counted at a proxy, as its provider bills them
 * (docs/costs.md, "Per-object requests").
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  baseBackupKey,
  manifestKey,
  newBackupId,
  replicationCursorKey,
  replicationLagKey,
  walKey,
  walPrefix,
} from '../../../core/keys.ts';
import { serializeManifest } from '../../../core/manifest.ts';
import { parseWalBundleKey, walBundlesPrefix } from '../../../core/wal-bundle.ts';
import { measureFreshness } from '../../../lambdas/freshness/measure.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import { METRICS } from '../../../lambdas/lib/metrics.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { writeWalBundle } from '../../../lambdas/replication/wal-bundle-copy.ts';
import { WalBundleStorage } from '../../../storage/wal-bundles.ts';
import { readAll } from '../../storage/storage-contract.ts';
import { type FaultProxy, startFaultProxy } from '../../support/fault-proxy.ts';
import { localPipelineEnv, localTasks, retentionBindings } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { cursorsAt, sha256, walName } from '../../support/seeded-archive.ts';
import {
  type ExecutionFailed,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../../support/state-machines.ts';
import { manifestOf } from '../../support/test-manifests.ts';

const CLUSTERS = ['app-a', 'app-b', 'app-c'];
const SETTLED = 20 * 60 * 1000;
let server: S3Server;
const proxies: Record<string, FaultProxy> = {};
let env: PipelineEnv;
let locations: LocationFactory;
let machine: SynthesizedPipeline;
const buckets: Record<string, string> = { 'dr-aws': 'dr', b2: 'offsite' };
const written = new Map<string, Buffer>();
let next = 101;

beforeAll(async () => {
  // dr-aws honours If-None-Match, as AWS S3 does; b2 is not known to (no header sent).
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'], conditionalWrites: true });
  for (const name of [...Object.keys(buckets), 'ingest'])
    proxies[name] = await startFaultProxy(server.endpoint);
  const base = localPipelineEnv(CLUSTERS, { drAws: 'dr', b2: 'offsite' });
  env = { ...base, targets: base.targets.map((t) => ({ ...t, walBundles: true })) };
  const ingest: Location = {
    name: 'ingest',
    storage: s3rverStorage((proxies.ingest as FaultProxy).endpoint, 'ingest'),
  };
  locations = {
    ingest: async () => ingest,
    target: async (target) => ({
      name: target.name,
      storage: s3rverStorage((proxies[target.name] as FaultProxy).endpoint, buckets[target.name] as string),
      conditionalWrites: target.name === 'dr-aws',
    }),
  };
  for (const target of Object.keys(buckets))
    await ingest.storage.put(
      replicationCursorKey(target),
      Readable.from([JSON.stringify(cursorsAt(CLUSTERS, 100))]),
    );
  machine = synthPipeline();
}, 60_000);
afterAll(async () => {
  machine?.dispose();
  await Promise.all(Object.values(proxies).map((p) => p.stop()));
  await server?.stop();
});

/** `count` new segments in every cluster, as the hosts push them. */
async function push(count: number): Promise<string[]> {
  const ingest = await locations.ingest();
  const keys: string[] = [];
  for (let i = 0; i < count; i++, next++)
    for (const cluster of CLUSTERS) {
      const body = randomBytes(20_000 + i);
      const key = walKey(cluster, walName(next), sha256(body));
      await ingest.storage.put(key, Readable.from([body]));
      written.set(key, body);
      keys.push(key);
    }
  return keys;
}

/** One replication run at `now`; returns its output and each target's requests by operation. */
async function run(now: Date, input: unknown = {}) {
  const before = Object.fromEntries(Object.entries(proxies).map(([n, p]) => [n, { ...p.operations }]));
  const alerts: unknown[] = [];
  const execution = await runStateMachine(
    machine.stateMachine('replication'),
    {
      lambdas: localTasks('replication', { env, locations, policies: {}, now: () => now }),
      states: { 'Alert replication failure': (i) => alerts.push(i) },
    },
    input,
  );
  const requests = Object.fromEntries(
    Object.entries(proxies).map(([name, p]) => [
      name,
      Object.fromEntries(
        Object.entries(p.operations)
          .map(([op, n]) => [op, n - (before[name]?.[op] ?? 0)] as const)
          .filter(([, n]) => n > 0),
      ),
    ]),
  );
  return {
    output: execution.output as { targets: { target: string; objectsCopied: number }[] },
    requests,
    alerts,
  };
}

const reader = (target: string) =>
  new WalBundleStorage(s3rverStorage(server.endpoint, buckets[target] as string));

async function bundleKeys(target: string, cluster: string): Promise<string[]> {
  const found: string[] = [];
  for await (const o of s3rverStorage(server.endpoint, buckets[target] as string).list(
    walBundlesPrefix(cluster),
  ))
    found.push(o.key);
  return found;
}

describe('WAL bundles at replication targets', () => {
  it('writes one bundle per cluster and run: one PUT per cluster at each target, not one per segment', async () => {
    const keys = await push(10);
    const { output, requests, alerts } = await run(new Date(Date.now() + SETTLED));
    expect(alerts).toEqual([]);
    for (const target of Object.keys(buckets)) {
      expect(output.targets.find((t) => t.target === target)?.objectsCopied).toBe(30);
      // 3 clusters: 3 bundles, each a create-only PUT (a HEAD first) confirmed by a read of its index.
      expect(requests[target]).toEqual({ PUT: 3, HEAD: 3, GET: 3 });
      for (const cluster of CLUSTERS) expect(await bundleKeys(target, cluster)).toHaveLength(1);
      const storage = reader(target);
      for (const key of keys) expect(await readAll(await storage.get(key))).toEqual(written.get(key));
      const listed: string[] = [];
      for await (const o of storage.list(walPrefix('app-b'))) listed.push(o.key);
      expect(listed).toEqual(keys.filter((k) => k.includes('/app-b/')).sort());
    }
    // Ingest: per segment and target one GET and no HEAD (60 HEAD before): the size comes from the
    // plan's own listing, the provider's checksum with the GET's answer.
    // (LIST: 3 per cluster, shared by the targets; GET and PUT beyond that: cursors and lag records.)
    expect(requests.ingest).toEqual({ GET: 66, LIST: 6, PUT: 4 });
    console.info(`30 segments in 3 clusters to 2 bundled targets: ${JSON.stringify(requests)}`);
  }, 120_000);

  it('leaves segments that have not settled for a later run, which bundles them once', async () => {
    const keys = await push(4);
    // The runs above ran on a clock 20 minutes ahead; their lag entries would outrank this run's.
    for (const target of Object.keys(buckets))
      await (await locations.ingest()).storage.delete(replicationLagKey(target));
    const early = await run(new Date());
    // Waiting costs no request but the listing: no HEAD or GET of the segments on either side.
    expect(early.requests.ingest?.HEAD).toBeUndefined();
    for (const target of Object.keys(buckets)) {
      expect(early.requests[target]).toEqual({});
      expect(early.requests[target]?.PUT).toBeUndefined();
      expect(await reader(target).head(keys[0] as string)).toBeUndefined();
    }
    // The segments waiting are lag in the record freshness reads: each cluster has an object missing.
    const lagRecord = async (target: string) =>
      JSON.parse(await text(await (await locations.ingest()).storage.get(replicationLagKey(target)))) as {
        clusters: Record<string, { oldestMissing?: string }>;
      };
    for (const target of Object.keys(buckets))
      for (const cluster of CLUSTERS)
        expect((await lagRecord(target)).clusters[cluster]?.oldestMissing).toBeDefined();
    const later = await run(new Date(Date.now() + SETTLED));
    for (const target of Object.keys(buckets)) {
      for (const cluster of CLUSTERS)
        expect((await lagRecord(target)).clusters[cluster]?.oldestMissing).toBeUndefined();
      expect(later.requests[target]?.PUT).toBe(3);
      for (const key of keys)
        expect((await reader(target).head(key))?.sizeBytes).toBe(written.get(key)?.length);
      for (const cluster of CLUSTERS) {
        const bundles = (await bundleKeys(target, cluster)).map((k) => parseWalBundleKey(k));
        expect(bundles.map((b) => [b?.first, b?.last])).toEqual([
          [walName(101), walName(110)],
          [walName(111), walName(114)],
        ]);
      }
    }
    // Nothing new: nothing written.
    const quiet = await run(new Date(Date.now() + SETTLED));
    for (const target of Object.keys(buckets)) expect(quiet.requests[target]?.PUT).toBeUndefined();
  }, 120_000);

  it('the reconciliation counts bundled segments as present and copies nothing again; freshness counts them as copied', async () => {
    const { output, requests } = await run(new Date(Date.now() + SETTLED), { reconcile: true });
    for (const target of Object.keys(buckets)) {
      expect(output.targets.find((t) => t.target === target)?.objectsCopied).toBe(0);
      // Each bundle holds exactly ingest's segments of its range, which its key's digest shows:
      // no index is read. Per cluster: its listing, and the listing of stale multipart uploads (GET).
      expect(requests[target]).toEqual({ LIST: 6, GET: 3 });
    }
    // Freshness without a lag record compares listings: bundled segments are at the target.
    const ingest = await locations.ingest();
    for (const target of Object.keys(buckets)) await ingest.storage.delete(replicationLagKey(target));
    const lagOf = async () =>
      (await measureFreshness(env, locations, new Date(Date.now() + SETTLED))).metrics
        .filter((m) => m.name === METRICS.replicationLagSeconds)
        .map((m) => m.value);
    expect(await lagOf()).toEqual([0, 0, 0, 0, 0, 0]);
    // A new segment not bundled yet is lag, at both targets, in its cluster only.
    await push(1);
    expect((await lagOf()).filter((v) => v > 0)).toHaveLength(6);
  }, 120_000);

  it('retention deletes a bundle whole once every member precedes the kept base backup, and keeps one that straddles it', async () => {
    // dr-aws holds one base backup of app-a that starts at segment 112: WAL before it is not needed.
    const dr = s3rverStorage(server.endpoint, 'dr');
    const id = newBackupId(new Date());
    const body = randomBytes(1000);
    const base = { key: baseBackupKey('app-a', id, 'base'), role: 'base' as const, body };
    const manifest = manifestOf('app-a', id, new Date().toISOString(), [base], {
      startWalFile: walName(112),
      stopWalFile: walName(112),
    });
    await dr.put(base.key, Readable.from([body]));
    await dr.put(manifestKey('app-a', id), Readable.from([serializeManifest(manifest)]));
    const before = await bundleKeys('dr-aws', 'app-a');
    const deleted: string[] = [];
    const alerts: unknown[] = [];
    const retained = runStateMachine(
      machine.stateMachine('retention'),
      retentionBindings(
        env,
        locations,
        { 'dr-aws': { minimumKeep: 1, keepLast: 1 }, b2: { minimumKeep: 1, keepLast: 1 } },
        alerts,
        {
          onDelete: (i) => deleted.push(...(i as { batch: { keys: string[] } }).batch.keys),
        },
      ),
      {},
    );
    await expect(retained.catch((e: unknown) => ({ error: e, alerts }))).resolves.not.toHaveProperty('error');
    // [101..110] precedes 112 whole: deleted as one object; [111..114] holds 111 but also 112: kept whole.
    const [whole, straddling] = before;
    expect(parseWalBundleKey(whole as string)?.last).toBe(walName(110));
    expect(deleted).toEqual([whole]);
    expect(await bundleKeys('dr-aws', 'app-a')).toEqual([straddling]);
    const storage = reader('dr-aws');
    const kept = [...written.keys()].filter(
      (k) =>
        k.includes('/app-a/') &&
        k > walKey('app-a', walName(111), '') &&
        k < walKey('app-a', walName(115), ''),
    );
    expect(kept).toHaveLength(4);
    for (const key of kept) expect(await readAll(await storage.get(key))).toEqual(written.get(key));
    expect(await storage.head(walKey('app-a', walName(105), sha256(Buffer.from('x'))))).toBeUndefined();
    // Other clusters, and b2 (no backup there), keep everything.
    expect(await bundleKeys('dr-aws', 'app-b')).toHaveLength(2);
    expect(await bundleKeys('b2', 'app-a')).toHaveLength(2);
  }, 120_000);

  it('a verify run reads every bundled segment back and reports one changed at the provider; a bundle key a host wrote to ingest is never copied', async () => {
    // A host (holding its credentials) writes a bundle of its own making into ingest.
    const ingest = await locations.ingest();
    const forged = `${walBundlesPrefix('app-c', '00000001')}${walName(900)}-${walName(899)}-0123456789abcdef.pgkb`;
    await ingest.storage.put(forged, Readable.from([randomBytes(100)]));
    // b2's bundle of app-b is changed at the provider: one byte of its first member.
    const [bundle] = await bundleKeys('b2', 'app-b');
    const file = join(server.directory, 'offsite', `${bundle}._S3rver_object`);
    const bytes = await readFile(file);
    bytes[100] = (bytes[100] as number) ^ 0xff;
    await writeFile(file, bytes);

    const putsBefore = proxies.b2?.operations.PUT;
    const now = new Date(Date.now() + SETTLED);
    const failed = await run(now, { verify: true }).catch((error: unknown) => error as ExecutionFailed);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    for (const target of Object.keys(buckets))
      expect(await s3rverStorage(server.endpoint, buckets[target] as string).head(forged)).toBeUndefined();
    // Nothing written at b2: the three segments pushed since are after the cursor, left to the hot
    // path's bundles; the changed bundle is kept, never replaced.
    expect((proxies.b2?.operations.PUT ?? 0) - (putsBefore ?? 0)).toBe(0);
    expect(await bundleKeys('b2', 'app-b')).toContain(bundle);
    const storage = reader('b2');
    const changed = [...written.keys()].filter((k) => k.includes('/app-b/')).sort()[0] as string;
    await expect(storage.get(changed)).rejects.toThrow(/changed at the target; restore from another target/);
  }, 120_000);

  it('streams a bundle larger than one upload part in one PutObject, members intact', async () => {
    const ingest = await locations.ingest();
    const target = await locations.target(env.targets[1] as never);
    const members = [];
    for (let n = 1; n <= 3; n++) {
      const body = randomBytes(7 * 1024 * 1024 + n);
      const key = walKey('big', walName(n), sha256(body));
      await ingest.storage.put(key, Readable.from([body]));
      written.set(key, body);
      members.push({
        object: { key, sizeBytes: body.length, lastModified: new Date() },
        expected: { sizeBytes: body.length },
      });
    }
    const before = { ...proxies.b2?.operations };
    const bundle = await writeWalBundle(ingest, target, new WalBundleStorage(target.storage), 'big', members);
    expect(bundle.members).toBe(3);
    // 21 MiB, more than one 16 MiB part: its size is known before a byte is read, so one streamed
    // PutObject, where a multipart upload was 4 requests (create, two parts, complete).
    expect((proxies.b2?.operations.POST ?? 0) - (before.POST ?? 0)).toBe(0);
    expect((proxies.b2?.operations.PUT ?? 0) - (before.PUT ?? 0)).toBe(1);
    const storage = reader('b2');
    for (const { object } of members)
      expect((await readAll(await storage.get(object.key))).equals(written.get(object.key) as Buffer)).toBe(
        true,
      );
  }, 120_000);

  it('the reconciliation leaves WAL after the cursor to the hot path: each segment reaches a bundled target once, in a bundle', async () => {
    await push(2);
    const ingest = await locations.ingest();
    // The bundle a host forged into ingest above is reported by every reconciliation: gone now.
    for await (const o of ingest.storage.list(walBundlesPrefix('app-c'))) await ingest.storage.delete(o.key);
    // Earlier runs ran on a clock 20 minutes ahead; their lag entries would outrank this run's.
    for (const target of Object.keys(buckets)) await ingest.storage.delete(replicationLagKey(target));
    // The daily run while the segments have not settled: it copies none of them one by one...
    const reconciled = await run(new Date(), { reconcile: true });
    for (const target of Object.keys(buckets)) {
      expect(reconciled.requests[target]?.PUT).toBeUndefined();
      // ...and the lag record shows them missing.
      const lag = JSON.parse(await text(await ingest.storage.get(replicationLagKey(target)))) as {
        clusters: Record<string, { oldestMissing?: string }>;
      };
      for (const cluster of CLUSTERS) expect(lag.clusters[cluster]?.oldestMissing).toBeDefined();
    }
    // The next scheduled run, once they settled, bundles them.
    await run(new Date(Date.now() + SETTLED));
    for (const target of Object.keys(buckets)) {
      const raw = s3rverStorage(server.endpoint, buckets[target] as string);
      const bundles = new WalBundleStorage(raw);
      for (const cluster of CLUSTERS) {
        // The segments no scheduled run bundled before: 115 (pushed above, left by the verify run), 116, 117.
        const since = walKey(cluster, walName(115), '');
        const keys = [...written.keys()].filter((k) => k.includes(`/${cluster}/`) && k > since);
        expect(keys).toHaveLength(3);
        const singles: string[] = [];
        for await (const o of raw.list(walPrefix(cluster), { startAfter: since })) singles.push(o.key);
        expect(singles, `${target} ${cluster}`).toEqual([]);
        const held = new Map<string, number>();
        for await (const o of raw.list(walBundlesPrefix(cluster)))
          for (const m of await bundles.bundleMembers(o)) held.set(m.key, (held.get(m.key) ?? 0) + 1);
        for (const key of keys) expect(held.get(key), key).toBe(1);
      }
    }
  }, 120_000);
});
