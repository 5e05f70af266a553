// Step Functions caps every state's data at 256 KiB (the local runner enforces it as AWS does,
// test/support/state-machines.ts). A replication run of 1,000 clusters, each with 3 new WAL segments
// after its cursors, goes through the synthesized state machine with the real handlers against a
// real s3rver on 127.0.0.1: the plans name every key, so they must pass between states by
// reference, and the run must copy everything to both targets and advance every cluster's cursor.
// The targets store WAL in bundles, production's default: each cluster's segments arrive as one.
import { randomBytes } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicationCursorKey, walKey } from '../../core/keys.ts';
import { parseWalBundleKey } from '../../core/wal-bundle.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import type { ObjectInfo } from '../../storage/storage.ts';
import { WalBundleStorage } from '../../storage/wal-bundles.ts';
import { localPipelineEnv, replicationBindings } from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import { cursorsAt, sha256, walName } from '../support/seeded-archive.ts';
import {
  runStateMachine,
  STATE_PAYLOAD_LIMIT_BYTES,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

const CLUSTERS = Array.from({ length: 1_000 }, (_, i) => `db-${String(i).padStart(4, '0')}`);
const SEGMENTS = 3;
const LAST_COPIED = 1_000;
/** 16 KiB, well below the limit (256 KiB): state data does not grow with the clusters. */
const LARGEST_STATE_BYTES = STATE_PAYLOAD_LIMIT_BYTES / 16;
let server: S3Server;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;
let ingest: Location;
const targets = new Map<string, Location>();

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  synth = synthPipeline();
  // The production batch settings: 200 objects per invocation, 40 per run; WAL bundles on.
  const local = localPipelineEnv(CLUSTERS, { drAws: 'dr', b2: 'offsite' });
  env = {
    ...local,
    targets: local.targets.map((t) => ({ ...t, walBundles: true })),
    batchSize: 200,
    maxBatchesPerRun: 40,
  };
  ingest = { name: 'ingest', storage: s3rverStorage(server.endpoint, 'ingest') };
  targets.set('dr-aws', { name: 'dr-aws', storage: s3rverStorage(server.endpoint, 'dr') });
  targets.set('b2', { name: 'b2', storage: s3rverStorage(server.endpoint, 'offsite') });
  locations = {
    ingest: async () => ingest,
    target: async (target) => targets.get(target.name) as Location,
  };
}, 120_000);

afterAll(async () => {
  synth?.dispose();
  await server?.stop();
});

/**
 * Puts every object, a few at a time, stored an hour ago (s3rver reports its file's mtime): settled
 * WAL, which the cursors pass once it is copied.
 */
async function putAll(objects: readonly [string, Buffer][]): Promise<void> {
  const anHourAgo = new Date(Date.now() - 60 * 60 * 1000);
  await inParallel(objects, async ([key, body]) => {
    await ingest.storage.put(key, Readable.from([body]));
    const parts = key.split('/');
    const file = path.join(
      server.directory,
      'ingest',
      ...parts.slice(0, -1),
      `${parts.at(-1)}._S3rver_object`,
    );
    await utimes(file, anHourAgo, anHourAgo);
  });
}

/** Runs `each` over `items`, 16 at a time. */
async function inParallel<T>(items: readonly T[], each: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let next = queue.pop(); next !== undefined; next = queue.pop()) await each(next);
    }),
  );
}

describe('replication of many clusters', () => {
  it(`${CLUSTERS.length} clusters with ${SEGMENTS} new WAL segments each: every state stays under 16 KiB, every segment reaches each bundled target in one bundle, every cursor advances`, async () => {
    const cursors = JSON.stringify(cursorsAt(CLUSTERS, LAST_COPIED));
    const objects: [string, Buffer][] = [];
    for (const target of targets.keys()) objects.push([replicationCursorKey(target), Buffer.from(cursors)]);
    const lastKeyOf = new Map<string, string>();
    for (const cluster of CLUSTERS)
      for (let i = 1; i <= SEGMENTS; i++) {
        const body = randomBytes(16);
        const key = walKey(cluster, walName(LAST_COPIED + i), sha256(body));
        objects.push([key, body]);
        lastKeyOf.set(cluster, key);
      }
    await putAll(objects);
    const newKeys = objects.slice(targets.size).map(([key]) => key);

    const started = Date.now();
    const run = await runStateMachine(
      synth.stateMachine('replication'),
      replicationBindings(env, locations, []),
      { trigger: 'schedule' },
    );
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.info(
      `replication payload: ${CLUSTERS.length} clusters x ${SEGMENTS} segments, largest state ${run.largestPayload.bytes} bytes (${run.largestPayload.where}), ${run.statesEntered.length} states entered, ${seconds} s`,
    );

    expect(run.largestPayload.bytes).toBeLessThan(LARGEST_STATE_BYTES);
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: newKeys.length, objectsFailed: 0 },
        { target: 'b2', status: 'ok', objectsCopied: newKeys.length, objectsFailed: 0 },
      ],
    });
    for (const [name, target] of targets) {
      // Only bundles at the target, no segment on its own; each segment in exactly one bundle.
      const stored: ObjectInfo[] = [];
      for await (const object of target.storage.list('v1/')) stored.push(object);
      expect(
        stored.filter((o) => !parseWalBundleKey(o.key)).map((o) => o.key),
        `objects at ${name} that are not bundles`,
      ).toEqual([]);
      const bundled = new Map<string, number>();
      const reader = new WalBundleStorage(target.storage);
      await inParallel(stored, async (bundle) => {
        for (const { key } of await reader.bundleMembers(bundle))
          bundled.set(key, (bundled.get(key) ?? 0) + 1);
      });
      expect(
        newKeys.filter((key) => bundled.get(key) !== 1),
        `keys not in exactly one bundle at ${name}`,
      ).toEqual([]);
      // Each cluster's cursor now covers its newest segment (as `after`, or among the `copied` keys
      // still settling), so the next run does not plan them again.
      const after = JSON.parse(await text(await ingest.storage.get(replicationCursorKey(name)))) as {
        clusters: Record<string, unknown>;
      };
      expect(
        CLUSTERS.filter((c) => !JSON.stringify(after.clusters[c]).includes(lastKeyOf.get(c) as string)),
        `clusters whose cursor at ${name} did not advance`,
      ).toEqual([]);
    }
    // The stored plans are deleted once their run is through.
    const left: string[] = [];
    for await (const object of ingest.storage.list('pipeline/replication/')) left.push(object.key);
    expect(left.filter((key) => key.includes('/plans/'))).toEqual([]);
  }, 300_000);
});
