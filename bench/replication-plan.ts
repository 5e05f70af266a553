/**
 * Replication planning over 10,000 and over 200,000 stored objects (50 clusters, a real s3rver on
 * 127.0.0.1 behind a counting proxy): what the plan step does on the hot path, reading the cursors
 * and finding 10 new objects per run (lambdas/replication/cursors.ts).
 *
 * The claim is that a plan's work does not grow with the archive. Its requests are counted at the
 * proxy (the same at both sizes), and its time is split into the server's answers and the rest (the
 * planner's own work, the client and the loopback). The server's share grows locally only because
 * s3rver answers a StartAfter listing by reading and stat()ing every file of the listed folder
 * (its FilesystemStore.listObjects walks the directory, then filters `key <= startAfter`); S3 seeks
 * in its index. So the reference (the same within noise) is for the requests and the planner's own
 * time; the total on s3rver is printed but is not what S3 would show.
 */
import { Readable } from 'node:stream';
import { replicationCursorKey, walKey } from '../core/keys.ts';
import type { Location } from '../lambdas/lib/locations.ts';
import { findNewWork, readCursors } from '../lambdas/replication/cursors.ts';
import { startFaultProxy } from '../test/support/fault-proxy.ts';
import { s3rverStorage, startS3Server } from '../test/support/s3-server.ts';
import { cursorsAt, seedArchive, sha256, walName } from '../test/support/seeded-archive.ts';

const CLUSTERS = Array.from({ length: 50 }, (_, i) => `db-${String(i).padStart(2, '0')}`);
const RUNS = 5;

interface PlanFigures {
  readonly totalMs: number;
  readonly serverMs: number;
  readonly ownMs: number;
  readonly requests: number;
  readonly lists: number;
}

const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

const server = await startS3Server({ buckets: ['ingest'] });
const proxy = await startFaultProxy(server.endpoint);
try {
  const ingest: Location = { name: 'ingest', storage: s3rverStorage(proxy.endpoint, 'ingest') };
  const put = (key: string, body: string) => ingest.storage.put(key, Readable.from([Buffer.from(body)]));
  let segment = 2_000_000;
  async function plan(): Promise<PlanFigures> {
    // 10 new WAL segments over 10 clusters, then one plan (medians of RUNS).
    const runs: PlanFigures[] = [];
    for (let run = 0; run < RUNS; run++) {
      // The cursors where the previous run left them, then 10 segments after them.
      await put(replicationCursorKey('b2'), JSON.stringify(cursorsAt(CLUSTERS, segment)));
      for (const cluster of CLUSTERS.slice(0, 10))
        await put(walKey(cluster, walName(segment + 1), sha256(Buffer.from(`${segment}`))), 'new');
      segment += 2;
      const before = { ...proxy.counts };
      const started = performance.now();
      const cursors = await readCursors(ingest, 'b2');
      let found = 0;
      // One cluster after another, as planCopies does: the server's answers never overlap.
      for (const cluster of CLUSTERS) {
        const cursor = cursors.clusters[cluster];
        if (cursor) found += (await findNewWork(ingest, cluster, cursor, new Date(), 8_000)).objects.length;
      }
      const totalMs = performance.now() - started;
      if (found !== 10) throw new Error(`planning found ${found} new objects, expected 10`);
      const serverMs = proxy.counts.upstreamMs - before.upstreamMs;
      runs.push({
        totalMs,
        serverMs,
        ownMs: totalMs - serverMs,
        requests: proxy.counts.requests - before.requests,
        lists: proxy.counts.lists - before.lists,
      });
    }
    const of = (f: (p: PlanFigures) => number) => median(runs.map(f));
    return {
      totalMs: of((p) => p.totalMs),
      serverMs: of((p) => p.serverMs),
      ownMs: of((p) => p.ownMs),
      requests: of((p) => p.requests),
      lists: of((p) => p.lists),
    };
  }

  seedArchive(server.directory, 'ingest', CLUSTERS, 200, 1_000_000);
  const small = await plan();
  seedArchive(server.directory, 'ingest', CLUSTERS, 3_800, 0);
  const large = await plan();
  const ms = (f: (p: PlanFigures) => number) => `${f(small).toFixed(0)} ms / ${f(large).toFixed(0)} ms`;
  console.log(
    `replication planning (50 clusters, 10 new objects), over 10,000 / 200,000 stored objects:\n` +
      `  requests per plan: ${small.requests} / ${large.requests} (LIST ${small.lists} / ${large.lists})  (reference: the same)\n` +
      `  planner's own time (all but the server's answers): ${ms((p) => p.ownMs)}  (reference: the same within noise)\n` +
      `  s3rver's answers: ${ms((p) => p.serverMs)}  (s3rver reads and stats every file of a listed folder; S3 seeks)\n` +
      `  total on s3rver: ${ms((p) => p.totalMs)}  (not what S3 would show: see the line above)`,
  );
} finally {
  await proxy.stop();
  await server.stop();
}
