// Ingest pruning, run as deployed: the synthesized retention machine (aws-local-stepfunctions) with
// the real handlers, ingest and both targets on a real s3rver on 127.0.0.1. Time is injected: the
// objects are written a second apart around a cut-off, and `now` is the cut-off plus keepDays.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { checkArchiveGaps } from '../../../agent/commands/check-probes.ts';
import { baseBackupKey, manifestKey, walKey } from '../../../core/keys.ts';
import { serializeManifest } from '../../../core/manifest.ts';
import type { RetentionPolicy } from '../../../core/retention-planner.ts';
import { measureFreshness } from '../../../lambdas/freshness/measure.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { planCopies } from '../../../lambdas/replication/plan-copies.ts';
import { retentionBindings } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import {
  allStates,
  type ExecutionFailed,
  exampleConfig,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../../support/state-machines.ts';
import { manifestOf } from '../../support/test-manifests.ts';
import { putBundle } from '../../support/wal-bundles.ts';

const KEEP_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Keeps every backup, so a target counts as done with a key only by holding it. */
const KEEP_ALL: RetentionPolicy = { minimumKeep: 100 };

let server: S3Server;
let synth: SynthesizedPipeline;
let ingest: Location;
let dr: Location;
let b2: Location;
let locations: LocationFactory;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  synth = synthPipeline();
  ingest = { name: 'ingest', storage: s3rverStorage(server.endpoint, 'ingest') };
  dr = { name: 'dr-aws', storage: s3rverStorage(server.endpoint, 'dr') };
  b2 = { name: 'b2', storage: s3rverStorage(server.endpoint, 'offsite') };
  locations = {
    ingest: async () => ingest,
    target: async (target) => (target.name === 'dr-aws' ? dr : b2),
  };
}, 60_000);

afterAll(async () => {
  synth?.dispose();
  await server?.stop();
});

// The synthesized machine prunes the example config's cluster, "main": each test starts empty.
const CLUSTER = 'main';
beforeEach(async () => {
  for (const location of [ingest, dr, b2])
    for (const key of await keysOf(location)) await location.storage.delete(key);
});

function envFor(cluster: string, options: { bundling?: boolean; keepDays?: number } = {}): PipelineEnv {
  return {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: [cluster],
    targets: [
      {
        name: 'dr-aws',
        type: 'aws-s3',
        bucket: 'dr',
        region: 'us-east-1',
        prefix: '',
        ...(options.bundling ? { walBundles: true } : {}),
      },
      { name: 'b2', type: 'aws-s3', bucket: 'offsite', region: 'us-east-1', prefix: '' },
    ],
    batchSize: 60,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
    ...(options.keepDays === undefined ? {} : { ingestKeepDays: options.keepDays }),
  };
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const segment = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`;

async function put(location: Location, key: string, body: Buffer): Promise<void> {
  await location.storage.put(key, Readable.from([body]));
}

async function keysOf(location: Location, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of location.storage.list(prefix)) keys.push(object.key);
  return keys;
}

/** One cluster's archive in ingest: what each key is, and its bytes. */
interface Archive {
  readonly bodies: Map<string, Buffer>;
  readonly wal: Map<number, string>;
  readonly base: Map<string, { manifest: string; tar: string }>;
  /** `now` for which everything written before the cut-off is older than KEEP_DAYS. */
  readonly now: Date;
}

/**
 * Base backup B1 (starts at segment 1), WAL 1-4, B2 (starts at 3), WAL 5-6: all older than the
 * window. Then, a cut-off later, B3 (starts at 5) and WAL 7: inside it. Also a replication cursor
 * and a verification report in ingest, and another cluster's objects.
 */
async function writeArchive(cluster: string): Promise<Archive> {
  const bodies = new Map<string, Buffer>();
  const wal = new Map<number, string>();
  const base = new Map<string, { manifest: string; tar: string }>();
  const writeWal = async (n: number) => {
    const body = Buffer.from(`wal ${cluster} ${segment(n)}`);
    const key = walKey(cluster, segment(n), sha256(body));
    wal.set(n, key);
    bodies.set(key, body);
    await put(ingest, key, body);
  };
  const writeBase = async (id: string, start: number) => {
    const tar = baseBackupKey(cluster, id, 'base');
    const body = Buffer.from(`base ${cluster} ${id}`);
    await put(ingest, tar, body);
    const manifest = Buffer.from(
      serializeManifest(
        manifestOf(cluster, id, '2026-11-20T00:00:00Z', [{ key: tar, role: 'base', body }], {
          startWalFile: segment(start),
          stopWalFile: segment(start),
        }),
      ),
    );
    const key = manifestKey(cluster, id);
    await put(ingest, key, manifest);
    bodies.set(tar, body);
    bodies.set(key, manifest);
    base.set(id, { manifest: key, tar });
  };
  await writeBase('20261101T000000Z-0001', 1);
  for (const n of [1, 2, 3, 4]) await writeWal(n);
  await writeBase('20261102T000000Z-0002', 3);
  for (const n of [5, 6]) await writeWal(n);
  await sleep(1100);
  const cutoff = new Date();
  await sleep(1100);
  await writeBase('20261103T000000Z-0003', 5);
  await writeWal(7);
  for (const key of ['pipeline/replication/dr-aws/cursor.json', `verify/${cluster}/run.json`, 'v1/other/x'])
    await put(ingest, key, Buffer.from('{}'));
  return { bodies, wal, base, now: new Date(cutoff.getTime() + KEEP_DAYS * DAY_MS) };
}

/** Copies every object of `archive` to `at`, except `skip` (and `resize`: another size there). */
async function copyTo(at: Location, archive: Archive, options: { skip?: string[]; resize?: string[] } = {}) {
  for (const [key, body] of archive.bodies) {
    if (options.skip?.includes(key)) continue;
    await put(at, key, options.resize?.includes(key) ? Buffer.concat([body, Buffer.from('!')]) : body);
  }
}

function prune(
  env: PipelineEnv,
  now: Date,
  input: unknown = {},
  deleted: string[] = [],
  policies: Record<string, RetentionPolicy> = { 'dr-aws': KEEP_ALL, b2: KEEP_ALL },
) {
  return runStateMachine(
    synth.stateMachine('retention'),
    retentionBindings(env, locations, policies, [], {
      now,
      lockOf: async () => false,
      onDelete: (i) => {
        const { target, batch } = i as { target: string; batch: { keys: string[] } };
        deleted.push(...batch.keys.map((k) => `${target}:${k}`));
      },
    }),
    input,
  );
}

const B1 = '20261101T000000Z-0001';
const B2 = '20261102T000000Z-0002';
const B3 = '20261103T000000Z-0003';

describe('ingest pruning in the retention state machine', () => {
  it('prunes old backups (objects, then manifest) and old WAL before the oldest base kept, once both targets hold them; the reconciliation then copies nothing', async () => {
    const cluster = CLUSTER;
    const archive = await writeArchive(cluster);
    await copyTo(dr, archive);
    await copyTo(b2, archive);
    const env = envFor(cluster, { keepDays: KEEP_DAYS });
    const before = await keysOf(ingest);
    const deleted: string[] = [];
    const run = await prune(env, archive.now, {}, deleted);
    const b1 = archive.base.get(B1);
    const b2Backup = archive.base.get(B2);
    const expected = [
      b1?.tar,
      b1?.manifest,
      b2Backup?.tar,
      b2Backup?.manifest,
      ...[1, 2, 3, 4].map((n) => archive.wal.get(n)),
    ].map((k) => `ingest:${k}`);
    expect(deleted.filter((d) => d.startsWith('ingest:'))).toEqual(expected);
    expect(run.output).toMatchObject({
      anyFailed: false,
      ingest: [{ cluster, dryRun: false, rounds: 1, backups: 2, wal: 4, deleted: 8, more: false }],
    });
    const after = await keysOf(ingest);
    expect(after).toEqual(before.filter((k) => !expected.includes(`ingest:${k}`)));
    // B3, and WAL 5 and 6 (old, but B3 starts at 5) and 7 stay; so do pipeline/, verify/ and v1/other/.
    expect(after).toEqual(
      expect.arrayContaining([
        archive.base.get(B3)?.manifest,
        archive.wal.get(5),
        archive.wal.get(6),
        archive.wal.get(7),
        'pipeline/replication/dr-aws/cursor.json',
        `verify/${cluster}/run.json`,
        'v1/other/x',
      ]),
    );
    // The targets keep everything.
    expect(await keysOf(dr, `v1/${cluster}/`)).toHaveLength(archive.bodies.size);
    // A reconciliation against a target finds nothing missing: it compares ingest's listing only.
    const reconcile = await planCopies(
      { target: 'b2', execution: { reconcile: true } },
      env,
      locations,
      { b2: KEEP_ALL },
      archive.now,
    );
    expect(reconcile).toMatchObject({ objectCount: 0, manifestKeys: [] });
    expect(reconcile.oldestMissing).toBeUndefined();
    // A second run has nothing left to prune.
    const again: string[] = [];
    await prune(env, archive.now, {}, again);
    expect(again.filter((d) => d.startsWith('ingest:'))).toEqual([]);
  });

  it('keeps a backup a target lacks or holds at another size, every newer backup, and WAL from the first segment a target lacks on', async () => {
    const cluster = CLUSTER;
    const archive = await writeArchive(cluster);
    const b2Tar = archive.base.get(B2)?.tar as string;
    await copyTo(dr, archive, { resize: [b2Tar] });
    await copyTo(b2, archive, { skip: [archive.wal.get(2) as string] });
    const deleted: string[] = [];
    const run = await prune(envFor(cluster, { keepDays: KEEP_DAYS }), archive.now, {}, deleted);
    // B1 goes; B2 stays (dr-aws holds its tar at another size), so WAL from B2's start (3) stays;
    // b2 lacks WAL 2, so it stays, and WAL goes oldest first up to it (no hole): only WAL 1 goes.
    expect(deleted.filter((d) => d.startsWith('ingest:'))).toEqual(
      [archive.base.get(B1)?.tar, archive.base.get(B1)?.manifest, archive.wal.get(1)].map(
        (k) => `ingest:${k}`,
      ),
    );
    const after = await keysOf(ingest, `v1/${cluster}/`);
    expect(after).toEqual(
      expect.arrayContaining([b2Tar, archive.base.get(B2)?.manifest, archive.wal.get(2), archive.wal.get(3)]),
    );
    expect((run.output as { ingest: { kept: string[] }[] }).ingest[0]?.kept).toEqual([
      expect.stringMatching(new RegExp(`backup ${B2} and every newer one stay: ${b2Tar} is not at dr-aws`)),
      expect.stringMatching(new RegExp(`WAL from ${segment(2)} on stays: it is not at b2`)),
    ]);
    // What ingest keeps has no hole: neither `pgkeep check --archive` nor freshness sees a gap.
    expect(await checkArchiveGaps(ingest.storage, cluster)).toEqual([
      expect.objectContaining({
        ok: true,
        detail: expect.stringContaining(`no gap in ${segment(3)} to ${segment(7)}`),
      }),
    ]);
    const freshness = await measureFreshness(
      envFor(cluster, { keepDays: KEEP_DAYS }),
      locations,
      archive.now,
    );
    expect(freshness.metrics.find((m) => m.name === 'ArchiveGaps')?.value).toBe(0);
  });

  it("counts what a target's own retention deleted as done there, and the reconciliation never copies it back", async () => {
    const cluster = CLUSTER;
    const archive = await writeArchive(cluster);
    await copyTo(dr, archive);
    await copyTo(b2, archive);
    const env = envFor(cluster, { keepDays: KEEP_DAYS });
    const policies = { 'dr-aws': KEEP_ALL, b2: { minimumKeep: 1, keepLast: 1 } };
    const deleted: string[] = [];
    // The same run: retention first deletes B1, B2 and WAL 1-4 at b2, then ingest is pruned of them.
    await prune(env, archive.now, {}, deleted, policies);
    const gone = [
      archive.base.get(B1)?.tar,
      archive.base.get(B1)?.manifest,
      archive.base.get(B2)?.tar,
      archive.base.get(B2)?.manifest,
      ...[1, 2, 3, 4].map((n) => archive.wal.get(n)),
    ] as string[];
    expect(deleted.filter((d) => d.startsWith('b2:')).sort()).toEqual(gone.map((k) => `b2:${k}`).sort());
    expect(deleted.filter((d) => d.startsWith('ingest:'))).toEqual(gone.map((k) => `ingest:${k}`));
    const reconcile = await planCopies(
      { target: 'b2', execution: { reconcile: true } },
      env,
      locations,
      policies,
      archive.now,
    );
    expect(reconcile).toMatchObject({ objectCount: 0, manifestKeys: [] });
    for (const key of gone) expect(await b2.storage.head(key)).toBeUndefined();
  });

  it('counts a segment held in a WAL bundle at a bundling target as held', async () => {
    const cluster = CLUSTER;
    const archive = await writeArchive(cluster);
    const walKeys = new Set(archive.wal.values());
    // dr-aws holds the backups and WAL 1-6 as one bundle, no single WAL objects; b2 holds singles.
    await copyTo(dr, archive, { skip: [...walKeys] });
    await putBundle(
      dr.storage,
      cluster,
      [1, 2, 3, 4, 5, 6].map((n) => ({
        key: archive.wal.get(n) as string,
        bytes: archive.bodies.get(archive.wal.get(n) as string) as Buffer,
      })),
    );
    await copyTo(b2, archive);
    const deleted: string[] = [];
    await prune(envFor(cluster, { bundling: true, keepDays: KEEP_DAYS }), archive.now, {}, deleted);
    expect(deleted.filter((d) => d.includes('/wal/'))).toEqual(
      [1, 2, 3, 4].map((n) => `ingest:${archive.wal.get(n)}`),
    );
  });

  it('a dry run lists what it would prune and deletes nothing', async () => {
    const cluster = CLUSTER;
    const archive = await writeArchive(cluster);
    await copyTo(dr, archive);
    await copyTo(b2, archive);
    const before = await keysOf(ingest);
    const deleted: string[] = [];
    const run = await prune(envFor(cluster, { keepDays: KEEP_DAYS }), archive.now, { dryRun: true }, deleted);
    expect(deleted).toEqual([]);
    expect(await keysOf(ingest)).toEqual(before);
    expect(run.output).toMatchObject({ ingest: [{ dryRun: true, backups: 2, wal: 4, deleted: 8 }] });
  });

  it('the delete step refuses a batch with a key outside the cluster, under pipeline/ or verify/: nothing is deleted, the run alerts and fails', async () => {
    const cluster = CLUSTER;
    const archive = await writeArchive(cluster);
    const own = archive.wal.get(1) as string;
    for (const stray of [
      'pipeline/replication/dr-aws/cursor.json',
      `verify/${cluster}/run.json`,
      'v1/other/x',
    ]) {
      const machine = synth.stateMachine('retention');
      const alerts: unknown[] = [];
      const bindings = retentionBindings(
        envFor(cluster, { keepDays: KEEP_DAYS }),
        locations,
        { 'dr-aws': KEEP_ALL, b2: KEEP_ALL },
        alerts,
        { now: archive.now, lockOf: async () => false },
      );
      const planned = {
        target: 'ingest',
        cluster,
        round: 1,
        dryRun: false,
        keepDays: KEEP_DAYS,
        deleteBatches: [{ cluster, keys: [own, stray] }],
        deletions: { count: 2, first: [] },
        backupsPruned: 0,
        walPruned: 2,
        more: false,
        kept: [],
        rejected: { count: 0, first: [] },
      };
      const failed = await runStateMachine(
        machine,
        { ...bindings, lambdas: { ...bindings.lambdas, 'retention/plan-ingest-prune': () => planned } },
        {},
      ).catch((error: unknown) => error);
      expect((failed as ExecutionFailed).error).toBe('IngestPruningFailed');
      expect(JSON.stringify(alerts)).toContain(`refusing to delete ${stray}`);
      expect(await keysOf(ingest)).toEqual(expect.arrayContaining([own, stray]));
    }
  });

  it('without ingest.keepDays the machine has no pruning step and ingest is left whole', async () => {
    const config = exampleConfig();
    const { keepDays: _, ...ingestConfig } = config.ingest;
    const off = synthPipeline({ ...config, ingest: ingestConfig });
    try {
      const machine = off.stateMachine('retention');
      expect(allStates(machine.definition).map(([name]) => name)).not.toContain('Plan ingest pruning');
      const cluster = CLUSTER;
      const archive = await writeArchive(cluster);
      await copyTo(dr, archive);
      await copyTo(b2, archive);
      const before = await keysOf(ingest);
      await runStateMachine(
        machine,
        retentionBindings(envFor(cluster), locations, { 'dr-aws': KEEP_ALL, b2: KEEP_ALL }, [], {
          now: archive.now,
          lockOf: async () => false,
        }),
        {},
      );
      expect(await keysOf(ingest)).toEqual(before);
    } finally {
      off.dispose();
    }
  });
});
