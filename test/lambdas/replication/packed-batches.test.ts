// A run with a few new segments in each of many clusters, more than the first step copies itself:
// the synthesized replication machine with the real handlers on s3rver packs the clusters' small
// batches into few "Copy batch to target" invocations (each a Map iteration, billed per state), and
// a failure in one cluster of a pack is reported for that cluster only.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { replicationCursorKey, walKey } from '../../../core/keys.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { copyBatch, handler as copyBatchHandler } from '../../../lambdas/replication/copy-batch.ts';
import { deleteStoredPlan, readStoredPlan, storePlan } from '../../../lambdas/replication/cursors.ts';
import type { CopyBatchOutput } from '../../../lambdas/replication/types.ts';
import { localPipelineEnv, replicationBindings } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { cursorsAt, sha256, walName } from '../../support/seeded-archive.ts';
import { type ExecutionFailed, runStateMachine, synthPipeline } from '../../support/state-machines.ts';

const CLUSTERS = Array.from({ length: 30 }, (_, i) => `db-${String(i).padStart(2, '0')}`);
const BATCH_SIZE = 20;
let server: S3Server;
let env: PipelineEnv;
let locations: LocationFactory;
const buckets: Record<string, string> = { 'dr-aws': 'dr', b2: 'offsite' };

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  env = { ...localPipelineEnv(CLUSTERS, { drAws: 'dr', b2: 'offsite' }), batchSize: BATCH_SIZE };
  const at = (bucket: string): Location => ({
    name: bucket,
    storage: s3rverStorage(server.endpoint, bucket),
  });
  locations = {
    ingest: async () => at('ingest'),
    target: async (target) => ({ ...at(buckets[target.name] as string), name: target.name }),
  };
}, 60_000);
afterAll(async () => server?.stop());

it('packs many clusters’ small batches into few invocations; a failure is reported for its cluster only', async () => {
  const ingest = await locations.ingest();
  const put = (location: Location, key: string, body: Buffer) =>
    location.storage.put(key, Readable.from([body]));
  for (const target of Object.keys(buckets))
    await put(ingest, replicationCursorKey(target), Buffer.from(JSON.stringify(cursorsAt(CLUSTERS, 100))));
  // 3 new segments in each of 30 clusters: 90 objects, more than one batch (20).
  const keys: string[] = [];
  for (const cluster of CLUSTERS)
    for (let n = 101; n <= 103; n++) {
      const body = randomBytes(32);
      const key = walKey(cluster, walName(n), sha256(body));
      await put(ingest, key, body);
      keys.push(key);
    }
  // dr-aws already holds one of them with other bytes (and size): a conflict, never replaced.
  const conflicting = keys[40] as string;
  await put(await locations.target(env.targets[0] as never), conflicting, randomBytes(40));

  const bindings = replicationBindings(env, locations, []);
  const invocations: { target: string; objects: number; output: CopyBatchOutput }[] = [];
  const copy = bindings.lambdas?.['replication/copy-batch'] as (input: unknown) => Promise<CopyBatchOutput>;
  const machine = synthPipeline();
  try {
    const failed = await runStateMachine(
      machine.stateMachine('replication'),
      {
        ...bindings,
        lambdas: {
          ...bindings.lambdas,
          'replication/copy-batch': async (input) => {
            const { target, batch } = input as {
              target: string;
              batch: { count: number } | { count: number }[];
            };
            const objects = [batch].flat().reduce((n, b) => n + b.count, 0);
            const output = await copy(input);
            invocations.push({ target, objects, output });
            return output;
          },
        },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    // 90 objects in packs of at most 20 (whole clusters of 3): 5 invocations per target, not 30.
    for (const target of ['dr-aws', 'b2']) {
      const mine = invocations.filter((i) => i.target === target);
      expect(mine.map((i) => i.objects)).toEqual([18, 18, 18, 18, 18]);
      expect(mine.reduce((n, i) => n + i.output.copied + i.output.failed, 0)).toBe(90);
    }
    const conflictCluster = conflicting.split('/')[1];
    expect(invocations.flatMap((i) => i.output.failedClusters ?? [])).toEqual([conflictCluster]);
    for (const [name, bucket] of Object.entries(buckets)) {
      const target = s3rverStorage(server.endpoint, bucket);
      for (const key of keys) expect(await target.head(key), `${name} ${key}`).toBeDefined();
    }
    // States entered (docs/costs.md): 6 for the run, then per target 7 and 1 per invocation, plus
    // 2 for the target whose conflict fails it ("Objects failed their check", the alert).
    const states = (failed as ExecutionFailed).statesEntered;
    console.info(`replication of 90 objects in 30 clusters, 2 targets: ${states.length} states entered`);
    expect(states.filter((s) => s === 'Copy batch to target')).toHaveLength(10);
    expect(states).toHaveLength(6 + 2 * (7 + 5) + 2);
  } finally {
    machine.dispose();
  }
}, 120_000);

it('a plan too large to pass on is stored in ingest, read by its target only, and refused once deleted or malformed', async () => {
  const ingest = await locations.ingest();
  const batch = {
    cluster: 'db-00',
    firstKey: 'v1/db-00/a',
    lastKey: 'v1/db-00/b',
    count: 2,
    keys: ['v1/db-00/a', 'v1/db-00/b'],
  };
  const plan = { target: 'b2', batches: [batch], manifestKeys: ['v1/db-00/manifests/m.json'] };
  const key = await storePlan(ingest, 'b2', plan);
  expect(key).toMatch(/^pipeline\/replication\/b2\/plans\/[0-9a-f-]{36}\.json$/);
  await expect(readStoredPlan(ingest, 'dr-aws', key)).rejects.toThrow(
    /stored plan pipeline\/replication\/b2\/plans\/.+ is not one of target dr-aws's/,
  );
  // Read as often as a retried step needs it.
  expect(await readStoredPlan(ingest, 'b2', key)).toEqual(plan);
  expect(await readStoredPlan(ingest, 'b2', key)).toEqual(plan);
  // A batch copy is told which of the plan's batches: one it does not have is refused.
  await expect(copyBatch({ target: 'b2', batch: { stored: key, index: 1 } }, env, locations)).rejects.toThrow(
    `stored plan ${key} has no batch 1 (it has 1)`,
  );
  await deleteStoredPlan(ingest, 'b2', key);
  await expect(readStoredPlan(ingest, 'b2', key)).rejects.toThrow(
    /is gone .*the next run plans the target again/,
  );
  const other = await storePlan(ingest, 'b2', { target: 'dr-aws', batches: [], manifestKeys: [] });
  await expect(readStoredPlan(ingest, 'b2', other)).rejects.toThrow(/is not a replication plan of target b2/);
});

it('the copy step refuses a malformed packed batch before touching any bucket, naming the field', async () => {
  const saved = { ...process.env };
  process.env.PGKEEP_INGEST_BUCKET = 'ingest';
  process.env.PGKEEP_CLUSTERS = '["main"]';
  process.env.PGKEEP_TARGETS = '[]';
  try {
    const one = { cluster: 'main', firstKey: 'v1/main/a', lastKey: 'v1/main/b', count: 1 };
    await expect(
      copyBatchHandler({ target: 'b2', batch: [one, { cluster: 'main', firstKey: 'v1/main/c' }] } as never),
    ).rejects.toThrow('invalid input to replication/copy-batch at batch.1.lastKey: ');
  } finally {
    process.env = saved;
  }
});
