// Runs started by a manifest, through the synthesized Express front with the real handlers on
// s3rver: a small backup is replicated by the front alone; a backup too large for its first step,
// or a first step that fails, starts the synthesized Standard machine with the run's own input,
// which copies it.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey } from '../../core/keys.ts';
import { serializeManifest } from '../../core/manifest.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import {
  localPipelineEnv,
  manifestRunsBindings,
  replicationBindings,
  type StartedRun,
} from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';
import { backupIdAt } from '../support/seeded-archive.ts';
import { runStateMachine, type SynthesizedPipeline, synthPipeline } from '../support/state-machines.ts';
import { manifestOf } from '../support/test-manifests.ts';

const CLUSTER = 'main';
const MIB = 1024 * 1024;
const buckets: Record<string, string> = { 'dr-aws': 'dr', b2: 'offsite' };
let server: S3Server;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;
const at = (bucket: string): Location => ({ name: bucket, storage: s3rverStorage(server.endpoint, bucket) });

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  // Objects above 6 MiB are large (copied in parts, never by the first step), so a large backup is 7 MiB.
  env = { ...localPipelineEnv([CLUSTER], { drAws: 'dr', b2: 'offsite' }), largeObjectBytes: 6 * MIB };
  locations = {
    ingest: async () => at('ingest'),
    target: async (target) => ({ ...at(buckets[target.name] as string), name: target.name }),
  };
  synth = synthPipeline();
}, 60_000);
afterAll(async () => {
  synth?.dispose();
  await server?.stop();
});

/** A logical backup of `bytes` as the agent writes it: the dump, then its manifest; returns both keys. */
async function backup(n: number, bytes: number): Promise<{ dump: string; manifest: string }> {
  const ingest = at('ingest').storage;
  const id = backupIdAt(n);
  const body = randomBytes(bytes);
  const dump = logicalDumpKey(CLUSTER, 'shop', id);
  await ingest.put(dump, Readable.from([body]));
  const manifest = manifestKey(CLUSTER, id);
  const doc = manifestOf(CLUSTER, id, new Date().toISOString(), [{ key: dump, role: 'dump', body }]);
  await ingest.put(manifest, Readable.from([serializeManifest(doc)]));
  return { dump, manifest };
}

async function expectAtBothTargets(keys: string[]): Promise<void> {
  for (const [target, bucket] of Object.entries(buckets))
    for (const key of keys) expect(await at(bucket).storage.head(key), `${target} ${key}`).toBeDefined();
}

/** One manifest run of the Express front, as the EventBridge rule starts it. */
async function manifestRun(key: string, options: { failFirstStep?: boolean } = {}) {
  const alerts: unknown[] = [];
  const standardBindings = replicationBindings(env, locations, alerts);
  const started: StartedRun[] = [];
  const bindings = manifestRunsBindings(synth.stateMachine('replication'), standardBindings, started);
  if (options.failFirstStep)
    Object.assign(bindings.lambdas ?? {}, {
      'replication/plan-copies': () => {
        throw Object.assign(new Error('Task timed out after 180.00 seconds'), { name: 'States.Timeout' });
      },
    });
  const input = { trigger: 'manifest', key };
  const t0 = performance.now();
  const front = await runStateMachine(synth.stateMachine('replicationManifestRuns'), bindings, input);
  const seconds = (performance.now() - t0) / 1000;
  return { input, front, seconds, started, alerts };
}

describe('runs started by a manifest (the Express front)', () => {
  it('a small backup is replicated by the front alone: no Standard run started, the objects at both targets', async () => {
    const { dump, manifest } = await backup(1, 64 * 1024);
    const { front, seconds, started, alerts } = await manifestRun(manifest);
    expect(front.statesEntered).toEqual([
      'Plan and copy every target',
      'Anything left to copy?',
      'Replicated by the first step',
    ]);
    expect(started).toEqual([]);
    expect(alerts).toEqual([]);
    expect(front.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 1, manifestsCopied: 1 },
        { target: 'b2', status: 'ok', objectsCopied: 1, manifestsCopied: 1 },
      ],
    });
    await expectAtBothTargets([dump, manifest]);
    // A rough guide for docs/costs.md: an Express run bills its duration, and its log every event.
    console.info(
      `manifest run through the Express front: ${seconds.toFixed(2)} s locally, ${front.logged.events} log events, ${front.logged.dataBytes} bytes of execution data`,
    );
  }, 60_000);

  it('a backup too large for the first step starts the Standard machine with the original input, which copies it', async () => {
    const { dump, manifest } = await backup(2, 7 * MIB);
    const { input, front, started, alerts } = await manifestRun(manifest);
    expect(front.statesEntered).toEqual([
      'Plan and copy every target',
      'Anything left to copy?',
      'Start a standard run',
      'Handed off to a standard run',
    ]);
    expect(started.map((s) => s.input)).toEqual([input]);
    const standard = await (started[0] as StartedRun).run;
    // The Standard run planned again and copied the large object in parts.
    expect(standard.statesEntered).toContain('Copy large objects');
    expect(standard.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 1, manifestsCopied: 1 },
        { target: 'b2', status: 'ok', objectsCopied: 1, manifestsCopied: 1 },
      ],
    });
    expect(alerts).toEqual([]);
    await expectAtBothTargets([dump, manifest]);
  }, 120_000);

  it('a first step that fails hands off too: the Standard run plans every target and copies the backup', async () => {
    const { dump, manifest } = await backup(3, 64 * 1024);
    const { input, front, started } = await manifestRun(manifest, { failFirstStep: true });
    expect(front.statesEntered).toEqual([
      'Plan and copy every target',
      'Start a standard run',
      'Handed off to a standard run',
    ]);
    expect(started.map((s) => s.input)).toEqual([input]);
    const standard = await (started[0] as StartedRun).run;
    expect(standard.statesEntered.slice(0, 3)).toEqual([
      'Plan and copy every target',
      'Anything left to copy?',
      'Replicated by the first step',
    ]);
    expect(standard.output).toMatchObject({
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 1 },
        { target: 'b2', status: 'ok', objectsCopied: 1 },
      ],
    });
    await expectAtBothTargets([dump, manifest]);
  }, 60_000);
});
