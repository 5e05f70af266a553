/**
 * States entered (Step Functions' billed transitions) by one scheduled replication run over 100
 * clusters with 25 new WAL segments each, to the example config's two targets: the synthesized
 * state machine with the real handlers (aws-local-stepfunctions), the production batch settings
 * (200 objects per invocation, 40 per round), a real s3rver on 127.0.0.1 behind a counting proxy.
 * docs/costs.md prices the scheduled runs of a 100-host deployment from this count; it is a bench
 * and not a test because copying 5,000 objects through s3rver takes minutes.
 */
import { randomBytes } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { replicationCursorKey, walKey } from '../core/keys.ts';
import type { Location, LocationFactory } from '../lambdas/lib/locations.ts';
import { startFaultProxy } from '../test/support/fault-proxy.ts';
import { localPipelineEnv, replicationBindings } from '../test/support/local-pipeline.ts';
import { s3rverStorage, startS3Server } from '../test/support/s3-server.ts';
import { cursorsAt, sha256, walName } from '../test/support/seeded-archive.ts';
import { runStateMachine, synthPipeline } from '../test/support/state-machines.ts';

const CLUSTERS = Array.from({ length: 100 }, (_, i) => `db-${String(i).padStart(3, '0')}`);
const NEW_KEYS = 25;
const LAST_COPIED = 1_000;

const server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
const proxy = await startFaultProxy(server.endpoint);
const synth = synthPipeline();
try {
  const env = {
    ...localPipelineEnv(CLUSTERS, { drAws: 'dr', b2: 'offsite' }),
    batchSize: 200,
    maxBatchesPerRun: 40,
  };
  const storage = (bucket: string): Location => ({
    name: bucket,
    storage: s3rverStorage(proxy.endpoint, bucket),
  });
  const ingest = storage('ingest');
  const targets = new Map([
    ['dr-aws', storage('dr')],
    ['b2', storage('offsite')],
  ]);
  const locations: LocationFactory = {
    ingest: async () => ingest,
    target: async (target) => targets.get(target.name) as Location,
  };
  const cursors = JSON.stringify(cursorsAt(CLUSTERS, LAST_COPIED));
  for (const target of targets.keys())
    await ingest.storage.put(replicationCursorKey(target), Readable.from([cursors]));
  // Stored an hour ago (s3rver reports its file's mtime): settled, so the cursors pass them.
  const queue: string[] = [];
  for (const cluster of CLUSTERS)
    for (let i = 1; i <= NEW_KEYS; i++)
      queue.push(walKey(cluster, walName(LAST_COPIED + i), sha256(randomBytes(8))));
  const anHourAgo = new Date(Date.now() - 60 * 60 * 1000);
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let key = queue.pop(); key; key = queue.pop()) {
        await ingest.storage.put(key, Readable.from([randomBytes(16)]));
        const parts = key.split('/');
        const file = path.join(
          server.directory,
          'ingest',
          ...parts.slice(0, -1),
          `${parts.at(-1)}._S3rver_object`,
        );
        await utimes(file, anHourAgo, anHourAgo);
      }
    }),
  );

  const before = { ...proxy.operations };
  const started = Date.now();
  const run = await runStateMachine(
    synth.stateMachine('replication'),
    replicationBindings(env, locations, []),
    {
      trigger: 'schedule',
    },
  );
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  const copied = (run.output as { targets: { target: string; objectsCopied: number }[] }).targets;
  for (const t of copied)
    if (t.objectsCopied !== CLUSTERS.length * NEW_KEYS)
      throw new Error(
        `${t.target}: ${t.objectsCopied} objects copied, expected ${CLUSTERS.length * NEW_KEYS}`,
      );
  const byState = new Map<string, number>();
  for (const state of run.statesEntered) byState.set(state, (byState.get(state) ?? 0) + 1);
  const requests = Object.entries(proxy.operations)
    .map(([op, n]) => `${op} ${n - (before[op] ?? 0)}`)
    .join(', ');
  console.log(
    `replication transitions: a scheduled run over ${CLUSTERS.length} clusters x ${NEW_KEYS} new keys, two targets: ` +
      `${run.statesEntered.length} states entered (${seconds} s on s3rver)\n` +
      `  by state: ${[...byState].map(([s, n]) => `${s} ${n}`).join('; ')}\n` +
      `  requests (both targets and ingest, on one server): ${requests}`,
  );
} finally {
  synth.dispose();
  await proxy.stop();
  await server.stop();
}
