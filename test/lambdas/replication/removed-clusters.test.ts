// A cluster removed from the config is forgotten by replication's objects in ingest (the cursors
// and the lag record), by the real plan step on s3rver, once a round plans every configured cluster;
// a round that plans only some (a new manifest's run) keeps the other entries as they are.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  manifestKey,
  newBackupId,
  replicationCursorKey,
  replicationLagKey,
  walKey,
} from '../../../core/keys.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { planStep } from '../../../lambdas/replication/plan-copies.ts';
import type { PlanCopiesOutput } from '../../../lambdas/replication/types.ts';
import { localPipelineEnv } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { cursorsAt, sha256, walName } from '../../support/seeded-archive.ts';

const SETTLED = 20 * 60 * 1000;
let server: S3Server;
let locations: LocationFactory;
let ingest: Location;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  const at = (bucket: string): Location => ({
    name: bucket,
    storage: s3rverStorage(server.endpoint, bucket),
  });
  ingest = at('ingest');
  locations = {
    ingest: async () => ingest,
    target: async (target) => ({ ...at(target.name === 'b2' ? 'offsite' : 'dr'), name: target.name }),
  };
}, 60_000);
afterAll(async () => server?.stop());

const envOf = (clusters: string[]): PipelineEnv => localPipelineEnv(clusters, { drAws: 'dr', b2: 'offsite' });

/** One new WAL segment in each cluster, then one plan step for b2 (it copies so little itself). */
async function replicate(env: PipelineEnv, segment: number, execution?: { key: string }) {
  for (const cluster of env.clusters) {
    const body = randomBytes(64);
    await ingest.storage.put(walKey(cluster, walName(segment), sha256(body)), Readable.from([body]));
  }
  const now = new Date(Date.now() + SETTLED);
  const plan = (await planStep(
    { target: 'b2', ...(execution ? { execution } : {}) },
    env,
    locations,
    {},
    now,
  )) as PlanCopiesOutput;
  expect(plan.done).toBe(true);
}

const clustersIn = async (key: string) =>
  Object.keys(
    (JSON.parse(await text(await ingest.storage.get(key))) as { clusters: object }).clusters,
  ).sort();

it('forgets a removed cluster in the cursors and the lag record once a round plans every configured cluster', async () => {
  await ingest.storage.put(
    replicationCursorKey('b2'),
    Readable.from([JSON.stringify(cursorsAt(['app-a', 'app-b', 'gone'], 100))]),
  );
  await replicate(envOf(['app-a', 'app-b', 'gone']), 101);
  expect(await clustersIn(replicationCursorKey('b2'))).toEqual(['app-a', 'app-b', 'gone']);
  expect(await clustersIn(replicationLagKey('b2'))).toEqual(['app-a', 'app-b', 'gone']);

  // "gone" leaves the config. A new manifest's run plans its own cluster only: nothing is forgotten.
  const configured = envOf(['app-a', 'app-b']);
  await replicate(configured, 102, { key: manifestKey('app-a', newBackupId(new Date())) });
  expect(await clustersIn(replicationCursorKey('b2'))).toEqual(['app-a', 'app-b', 'gone']);
  expect(await clustersIn(replicationLagKey('b2'))).toEqual(['app-a', 'app-b', 'gone']);

  // A scheduled run plans every configured cluster: both objects forget "gone".
  await replicate(configured, 103);
  expect(await clustersIn(replicationCursorKey('b2'))).toEqual(['app-a', 'app-b']);
  expect(await clustersIn(replicationLagKey('b2'))).toEqual(['app-a', 'app-b']);
}, 60_000);
