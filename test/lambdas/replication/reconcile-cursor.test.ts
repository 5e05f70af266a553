// The reconciliation never moves a WAL cursor back: a segment that lands behind the cursor (more
// than 15 minutes late) and has not settled when the daily run copies it would otherwise take the
// cursor back before it, and the hot path would then bundle again, at a bundled target, every
// segment after it. The real plan step (it copies a small plan itself) on s3rver.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { replicationCursorKey, walKey } from '../../../core/keys.ts';
import { parseTargetCursors } from '../../../core/replication-cursor.ts';
import { walBundlesPrefix } from '../../../core/wal-bundle.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { planStep } from '../../../lambdas/replication/plan-copies.ts';
import type { PlanCopiesOutput } from '../../../lambdas/replication/types.ts';
import type { ObjectInfo } from '../../../storage/storage.ts';
import { WalBundleStorage } from '../../../storage/wal-bundles.ts';
import { localPipelineEnv } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { cursorsAt, sha256, walName } from '../../support/seeded-archive.ts';

const SETTLED = 20 * 60 * 1000;
let server: S3Server;
let env: PipelineEnv;
let locations: LocationFactory;
let ingest: Location;
let target: Location;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  const local = localPipelineEnv(['app'], { drAws: 'dr', b2: 'offsite' });
  env = { ...local, targets: local.targets.map((t) => ({ ...t, walBundles: true })) };
  ingest = { name: 'ingest', storage: s3rverStorage(server.endpoint, 'ingest') };
  target = { name: 'b2', storage: s3rverStorage(server.endpoint, 'offsite') };
  locations = { ingest: async () => ingest, target: async () => target };
}, 60_000);
afterAll(async () => server?.stop());

async function push(segment: number): Promise<string> {
  const body = randomBytes(64);
  const key = walKey('app', walName(segment), sha256(body));
  await ingest.storage.put(key, Readable.from([body]));
  return key;
}

async function plan(now: Date, execution?: { reconcile: true }): Promise<void> {
  const out = (await planStep(
    { target: 'b2', ...(execution ? { execution } : {}) },
    env,
    locations,
    {},
    now,
  )) as PlanCopiesOutput;
  expect(out.done).toBe(true);
  expect(out.manifests?.summary.objectsFailed).toBe(0);
}

const cursorAfter = async () => {
  const json = await text(await ingest.storage.get(replicationCursorKey('b2')));
  return parseTargetCursors(json, 'cursor').clusters.app?.wal['00000001']?.after;
};

it('a late segment behind the cursor is copied on its own, and the cursor stays where it was', async () => {
  await ingest.storage.put(
    replicationCursorKey('b2'),
    Readable.from([JSON.stringify(cursorsAt(['app'], 100))]),
  );
  const keys = [await push(101), await push(102), await push(103), await push(104)];
  await plan(new Date(Date.now() + SETTLED));
  expect(await cursorAfter()).toBe(keys[3]);

  // Segment 102 pushed again with other bytes: another key, behind the cursor, not settled yet.
  const late = await push(102);
  await plan(new Date(), { reconcile: true });
  expect(await target.storage.head(late)).toBeDefined();
  expect(await cursorAfter()).toBe(keys[3]);

  // The next scheduled run finds nothing new: no second bundle of 101..104.
  await plan(new Date(Date.now() + SETTLED));
  const bundles: string[] = [];
  for await (const o of target.storage.list(walBundlesPrefix('app'))) bundles.push(o.key);
  expect(bundles).toHaveLength(1);
  const members = await new WalBundleStorage(target.storage).bundleMembers(
    (await target.storage.head(bundles[0] as string)) as ObjectInfo,
  );
  expect(members.map((m) => m.key)).toEqual(keys);
}, 60_000);
