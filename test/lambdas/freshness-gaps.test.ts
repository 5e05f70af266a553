// The freshness function publishes the gap count of each cluster's WAL archive in ingest, from its
// own state under pipeline/freshness/: a run lists only what is after that state (counted at the
// fault proxy in front of a real s3rver), a gap found stays counted, a later segment does not hide
// it, and a gap is judged only once the keys around it have settled (a late parallel push).
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseBackupKey, freshnessStateKey, logicalDumpKey, manifestKey, walKey } from '../../core/keys.ts';
import { type Manifest, serializeManifest } from '../../core/manifest.ts';
import { SETTLE_MS } from '../../core/replication-cursor.ts';
import { walSegmentFileNameFromNumber } from '../../core/wal-names.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { MetricValue } from '../../lambdas/lib/metrics.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { localPipelineEnv } from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';

const CLUSTER = 'gaps';
/** More segments than one LIST page (1,000 keys): a full listing of the timeline takes two. */
const SEGMENTS = 1_100;
let server: S3Server;
let proxy: FaultProxy;
let ingest: Location;
let locations: LocationFactory;
// The pipeline's local settings with no targets: freshness's own state and the archive only.
const env: PipelineEnv = { ...localPipelineEnv([CLUSTER], { drAws: 'unused', b2: 'unused' }), targets: [] };

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const segment = (n: number) => walSegmentFileNameFromNumber(1, n);
/** Every key stored so far has settled by then. */
const settledNow = () => new Date(Date.now() + SETTLE_MS + 60_000);

/** Stores WAL files (segments, `.history`, `.partial`) by name, as wal-push keys them. */
async function putWalFiles(names: readonly string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 50)
    await Promise.all(
      names
        .slice(i, i + 50)
        .map((name) =>
          ingest.storage.put(walKey(CLUSTER, name, sha256(name)), Readable.from([Buffer.from(name)])),
        ),
    );
}

const putWal = (numbers: readonly number[]) => putWalFiles(numbers.map(segment));

async function putManifest(manifest: Manifest): Promise<void> {
  const body = Buffer.from(`backup ${manifest.backupId}`);
  const key = manifest.objects[0]?.key as string;
  await ingest.storage.put(key, Readable.from([body]));
  await ingest.storage.put(
    manifestKey(CLUSTER, manifest.backupId),
    Readable.from([serializeManifest(manifest)]),
  );
}

function baseManifest(backupId: string, startWalFile: string): Manifest {
  const key = baseBackupKey(CLUSTER, backupId, 'base');
  return {
    format: 'pgkeep.manifest.v1',
    backupId,
    cluster: CLUSTER,
    kind: 'base',
    pgVersionNum: 170004,
    systemIdentifier: '7300000000000000001',
    startTime: '2026-11-20T01:00:00.000Z',
    stopTime: '2026-11-20T01:05:00.000Z',
    timeline: 1,
    startLsn: '0/3000028',
    stopLsn: '0/3000100',
    startWalFile,
    stopWalFile: startWalFile,
    objects: [
      {
        key,
        role: 'base',
        sizeBytes: 10,
        sha256: sha256('x'),
        plaintextSizeBytes: 10,
        codec: 'zstd',
        encryption: 'age-v1',
      },
    ],
    recipientFingerprints: ['0123456789abcdef'],
    agentVersion: '0.1.0',
  };
}

function metric(metrics: readonly MetricValue[], name: string): number | undefined {
  return metrics.find((m) => m.name === name && m.dimensions.Cluster === CLUSTER)?.value;
}

/** A freshness run at `now`, with the LIST and GET requests it made. */
async function measure(now: Date): Promise<{ metrics: MetricValue[]; lists: number; gets: number }> {
  const lists = proxy.counts.lists;
  const gets = proxy.operations.GET ?? 0;
  const { metrics } = await measureFreshness(env, locations, now);
  return { metrics, lists: proxy.counts.lists - lists, gets: (proxy.operations.GET ?? 0) - gets };
}

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest'] });
  proxy = await startFaultProxy(server.endpoint, 15);
  ingest = { name: 'ingest', storage: s3rverStorage(proxy.endpoint, 'ingest') };
  locations = {
    ingest: async () => ingest,
    target: async () => {
      throw new Error('no target in this test');
    },
  };
  // Segment 2 is missing before the base backup's start (3): recovery never needs it. Segment 500
  // is missing inside the window.
  await putManifest(baseManifest('20261120T010000Z-aaaa', segment(3)));
  await putWal([...Array(SEGMENTS).keys()].map((i) => i + 1).filter((n) => n !== 2 && n !== 500));
}, 120_000);

afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
});

describe('freshness: the gaps in the WAL archive', () => {
  it('a segment missing inside the window shows as 1 gap; one before the oldest base backup does not count', async () => {
    const first = await measure(settledNow());
    expect(metric(first.metrics, 'ArchiveGaps')).toBe(1);
    // The first run walks the whole archive once: manifests/, two pages of WAL, the reports.
    expect(first.lists).toBe(4);
    const state = JSON.parse(await text(await ingest.storage.get(freshnessStateKey(CLUSTER))));
    expect(state.wal['00000001'].gaps).toEqual([
      { from: segment(2), to: segment(2), missingSegments: 1 },
      { from: segment(500), to: segment(500), missingSegments: 1 },
    ]);
    expect(state.wal['00000001'].lastSegment).toBe(segment(SEGMENTS));
  });

  it('a later run with nothing new keeps the gap and lists only after its state', async () => {
    const again = await measure(settledNow());
    expect(metric(again.metrics, 'ArchiveGaps')).toBe(1);
    // manifests/ after the state, wal/ after the newest timeline's cursor (one page, empty), and
    // the verification reports: 3, whatever the archive holds; one GET, the state itself.
    expect(again.lists).toBe(3);
    expect(again.gets).toBe(1);
  });

  it('a new segment after the gap does not hide it; a new gap adds to it once its neighbours settle', async () => {
    await putWal([SEGMENTS + 1]);
    const after = await measure(settledNow());
    expect(metric(after.metrics, 'ArchiveGaps')).toBe(1);
    expect(after.lists).toBe(3);

    // SEGMENTS + 2 is missing. Not yet settled: it may still come from a parallel push.
    await putWal([SEGMENTS + 3]);
    const early = await measure(new Date());
    expect(metric(early.metrics, 'ArchiveGaps')).toBe(1);
    expect(metric(early.metrics, 'NewestWalAgeSeconds')).toBeLessThan(60);
    const settled = await measure(settledNow());
    expect(metric(settled.metrics, 'ArchiveGaps')).toBe(2);
  });

  it('a segment that arrives late, before its neighbours settled, is no gap', async () => {
    await putWal([SEGMENTS + 5]);
    await measure(new Date());
    await putWal([SEGMENTS + 4]);
    const settled = await measure(settledNow());
    expect(metric(settled.metrics, 'ArchiveGaps')).toBe(2);
  });

  it('the newest dump comes from the state, read once', async () => {
    const backupId = '20261121T010000Z-bbbb';
    const base = baseManifest(backupId, segment(3));
    const logical: Manifest = {
      format: base.format,
      backupId,
      cluster: CLUSTER,
      kind: 'logical',
      pgVersionNum: base.pgVersionNum,
      systemIdentifier: base.systemIdentifier,
      startTime: '2026-11-21T01:00:00.000Z',
      stopTime: '2026-11-21T01:05:00.000Z',
      objects: [
        {
          ...(base.objects[0] as Manifest['objects'][number]),
          key: logicalDumpKey(CLUSTER, 'shop', backupId),
          role: 'dump',
          database: 'shop',
        },
      ],
      recipientFingerprints: base.recipientFingerprints,
      agentVersion: base.agentVersion,
    };
    await putManifest(logical);
    const now = settledNow();
    const first = await measure(now);
    expect(metric(first.metrics, 'NewestDumpAgeSeconds')).toBe(
      (now.getTime() - Date.parse('2026-11-21T01:05:00.000Z')) / 1000,
    );
    const again = await measure(now);
    expect(metric(again.metrics, 'NewestDumpAgeSeconds')).toBe(
      (now.getTime() - Date.parse('2026-11-21T01:05:00.000Z')) / 1000,
    );
    expect(again.lists).toBe(3);
  });

  it('a new timeline is found by the same one WAL listing and walked after the old one', async () => {
    // Promotion after SEGMENTS + 5: the old timeline's partial segment, the new one's history file
    // and its first segments. None of them is a gap.
    const onTwo = (n: number) => walSegmentFileNameFromNumber(2, n);
    const first = SEGMENTS + 6;
    await putWalFiles([`${segment(first)}.partial`, '00000002.history', onTwo(first), onTwo(first + 1)]);
    const switched = await measure(settledNow());
    expect(switched.lists).toBe(3);
    expect(metric(switched.metrics, 'ArchiveGaps')).toBe(2);
    const state = async () => JSON.parse(await text(await ingest.storage.get(freshnessStateKey(CLUSTER))));
    const after = await state();
    expect(after.wal['00000001'].lastSegment).toBe(segment(SEGMENTS + 5));
    expect(after.wal['00000002']).toMatchObject({
      oldestSegment: onTwo(first),
      lastSegment: onTwo(first + 1),
      gaps: [],
    });

    // The next run lists with one WAL listing again, and still sees a gap on timeline 2.
    await putWalFiles([onTwo(first + 3)]);
    const later = await measure(settledNow());
    expect(later.lists).toBe(3);
    expect((await state()).wal['00000002']).toMatchObject({
      lastSegment: onTwo(first + 3),
      gaps: [{ from: onTwo(first + 2), to: onTwo(first + 2), missingSegments: 1 }],
    });

    // Timeline 3 begins while timeline 2's last segments have not settled (one is missing): the
    // run after they settle still lists from timeline 2's cursor, and finds the gap there.
    const onThree = (n: number) => walSegmentFileNameFromNumber(3, n);
    await putWalFiles([onTwo(first + 4), onTwo(first + 6), '00000003.history', onThree(first + 7)]);
    await measure(new Date());
    const settled = await measure(settledNow());
    expect(settled.lists).toBe(3);
    const timelines = (await state()).wal;
    expect(timelines['00000002']).toMatchObject({ lastSegment: onTwo(first + 6) });
    expect(timelines['00000002'].gaps).toContainEqual({
      from: onTwo(first + 5),
      to: onTwo(first + 5),
      missingSegments: 1,
    });
    expect(timelines['00000003']).toMatchObject({ lastSegment: onThree(first + 7) });
  });
});
