// The freshness function publishes each source's time since its last passed restore verification
// from its own state under pipeline/freshness/: a run lists verify/<cluster>/ and GETs only the
// reports stored since the last one (counted at the fault proxy in front of a real s3rver), so the
// cost does not grow with the weekly reports kept. Reports are validated as every reader does.
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshnessStateKey } from '../../core/keys.ts';
import { SETTLE_MS } from '../../core/replication-cursor.ts';
import { VERIFY_REPORT_FORMAT, type VerifyReport } from '../../core/verify-report.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import type { Location, LocationFactory } from '../../lambdas/lib/locations.ts';
import type { MetricValue } from '../../lambdas/lib/metrics.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { writeVerifyReport } from '../../storage/verify-reports.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { localPipelineEnv } from '../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../support/s3-server.ts';

const CLUSTER = 'reports';
const REPORTS = 8;
let server: S3Server;
let proxy: FaultProxy;
let ingest: Location;
let locations: LocationFactory;
// No targets: ingest is the only verification source the metric is published for.
const env: PipelineEnv = { ...localPipelineEnv([CLUSTER], { drAws: 'unused', b2: 'unused' }), targets: [] };
/** Every report stored so far has settled by then. */
const settledNow = () => new Date(Date.now() + SETTLE_MS + 60_000);

function report(runId: string, finishedAt: string, fields: Partial<VerifyReport> = {}): VerifyReport {
  return {
    format: VERIFY_REPORT_FORMAT,
    runId,
    cluster: CLUSTER,
    backupId: '20261101T010000Z-aaaa',
    mode: 'logical',
    source: 'ingest',
    startedAt: '2026-11-01T02:00:00.000Z',
    finishedAt,
    passed: true,
    exitCode: 0,
    summary: 'restored and checked',
    checks: [],
    ...fields,
  };
}

/** A freshness run at `now`: the ingest verification age it published, and its LIST and GET requests. */
async function measure(now: Date): Promise<{ age: number | undefined; lists: number; gets: number }> {
  const lists = proxy.counts.lists;
  const gets = proxy.operations.GET ?? 0;
  const { metrics } = await measureFreshness(env, locations, now);
  const age = metrics.find(
    (m: MetricValue) => m.name === 'LastPassedVerificationAgeSeconds' && m.dimensions.Source === 'ingest',
  )?.value;
  return { age, lists: proxy.counts.lists - lists, gets: (proxy.operations.GET ?? 0) - gets };
}

const ageOf = (now: Date, finishedAt: string) => (now.getTime() - Date.parse(finishedAt)) / 1000;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest'] });
  proxy = await startFaultProxy(server.endpoint);
  ingest = { name: 'ingest', storage: s3rverStorage(proxy.endpoint, 'ingest') };
  locations = {
    ingest: async () => ingest,
    target: async () => {
      throw new Error('no target in this test');
    },
  };
  // A year of weekly reports would be ~50; REPORTS stand for them. The newest passed one from
  // ingest finished on day REPORTS; newer ones that failed, are from another source, or are stored
  // under another run's key (a copy proves nothing) do not count.
  for (let day = 1; day <= REPORTS; day++)
    await writeVerifyReport(
      ingest.storage,
      report(`run-${day}`, `2026-11-${String(day).padStart(2, '0')}T03:00:00.000Z`),
    );
  await writeVerifyReport(
    ingest.storage,
    report('run-failed', '2026-11-20T03:00:00.000Z', { passed: false, exitCode: 7 }),
  );
  await writeVerifyReport(ingest.storage, report('run-dr', '2026-11-21T03:00:00.000Z', { source: 'dr-aws' }));
  const copied = JSON.stringify(report('run-forged', '2026-11-22T03:00:00.000Z'));
  await ingest.storage.put(`verify/${CLUSTER}/run-copy.json`, Readable.from([copied]));
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
});

describe('freshness: the last passed verification per source', () => {
  const newest = `2026-11-${String(REPORTS).padStart(2, '0')}T03:00:00.000Z`;

  it('the first run reads every report once; a run with no new report GETs none', async () => {
    const now = settledNow();
    const first = await measure(now);
    expect(first.age).toBe(ageOf(now, newest));
    // The state (absent yet) and each of the REPORTS + 3 reports.
    expect(first.gets).toBe(1 + REPORTS + 3);

    const again = await measure(now);
    expect(again.age).toBe(ageOf(now, newest));
    // Only the state: manifests/, wal/ and verify/ listed once each.
    expect(again.gets).toBe(1);
    expect(again.lists).toBe(3);
  });

  it('a new passed report is read once and moves the age', async () => {
    const finishedAt = '2026-11-25T03:00:00.000Z';
    await writeVerifyReport(ingest.storage, report('run-new', finishedAt));
    const now = settledNow();
    const run = await measure(now);
    expect(run.age).toBe(ageOf(now, finishedAt));
    expect(run.gets).toBe(2);
    const again = await measure(now);
    expect(again.age).toBe(ageOf(now, finishedAt));
    expect(again.gets).toBe(1);
  });

  it('a report not settled yet is read again until it is, in case one stored earlier shows late', async () => {
    const finishedAt = '2026-11-26T03:00:00.000Z';
    await writeVerifyReport(ingest.storage, report('run-recent', finishedAt));
    const now = new Date();
    expect((await measure(now)).gets).toBe(2);
    expect((await measure(now)).gets).toBe(2);
    const settled = settledNow();
    const run = await measure(settled);
    expect(run.age).toBe(ageOf(settled, finishedAt));
    expect((await measure(settled)).gets).toBe(1);
  });

  it('a state written before it kept verifications still parses, and the next run reads every report once', async () => {
    const key = freshnessStateKey(CLUSTER);
    const {
      verified: _verified,
      reports: _reports,
      ...old
    } = JSON.parse(await text(await ingest.storage.get(key)));
    await ingest.storage.put(key, Readable.from([JSON.stringify(old)]));
    const now = settledNow();
    const run = await measure(now);
    expect(run.age).toBe(ageOf(now, '2026-11-26T03:00:00.000Z'));
    expect(run.gets).toBe(1 + REPORTS + 3 + 2);
    expect((await measure(now)).gets).toBe(1);
  });
});
