/**
 * Replication planning time over 10,000 and over 200,000 stored objects (50 clusters, a real
 * s3rver on 127.0.0.1): what the plan step does on the hot path, reading the cursors and finding
 * 10 new objects per run (lambdas/replication/cursors.ts). Reference: the same within noise on S3,
 * since nothing before a cursor is listed and the request count does not change (the scale test
 * counts them). s3rver, unlike S3, reads a whole directory to answer a StartAfter or delimiter
 * listing, so locally the time still grows with the objects in a timeline's folder.
 */
import { Readable } from 'node:stream';
import { replicationCursorKey, walKey } from '../core/keys.ts';
import type { Location } from '../lambdas/lib/locations.ts';
import { findNewWork, readCursors } from '../lambdas/replication/cursors.ts';
import { s3rverStorage, startS3Server } from '../test/support/s3-server.ts';
import { cursorsAt, seedArchive, sha256, walName } from '../test/support/seeded-archive.ts';

const CLUSTERS = Array.from({ length: 50 }, (_, i) => `db-${String(i).padStart(2, '0')}`);
const RUNS = 5;

const server = await startS3Server({ buckets: ['ingest'] });
try {
  const ingest: Location = { name: 'ingest', storage: s3rverStorage(server.endpoint, 'ingest') };
  const put = (key: string, body: string) => ingest.storage.put(key, Readable.from([Buffer.from(body)]));
  let segment = 2_000_000;
  async function planMs(): Promise<number> {
    // 10 new WAL segments over 10 clusters, then one plan (median of RUNS).
    const times: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      // The cursors where the previous run left them, then 10 segments after them.
      await put(replicationCursorKey('b2'), JSON.stringify(cursorsAt(CLUSTERS, segment)));
      for (const cluster of CLUSTERS.slice(0, 10))
        await put(walKey(cluster, walName(segment + 1), sha256(Buffer.from(`${segment}`))), 'new');
      segment += 2;
      const started = performance.now();
      const cursors = await readCursors(ingest, 'b2');
      let found = 0;
      for (const cluster of CLUSTERS) {
        const cursor = cursors.clusters[cluster];
        if (cursor) found += (await findNewWork(ingest, cluster, cursor, new Date(), 8_000)).objects.length;
      }
      times.push(performance.now() - started);
      if (found !== 10) throw new Error(`planning found ${found} new objects, expected 10`);
    }
    return times.sort((a, b) => a - b)[Math.floor(RUNS / 2)] as number;
  }

  seedArchive(server.directory, 'ingest', CLUSTERS, 200, 1_000_000);
  const small = await planMs();
  seedArchive(server.directory, 'ingest', CLUSTERS, 3_800, 0);
  const large = await planMs();
  console.log(
    `replication planning (50 clusters, 10 new objects): ${small.toFixed(0)} ms over 10,000 stored objects, ${large.toFixed(0)} ms over 200,000 (reference: the same within noise on S3; s3rver reads each listed folder in full)`,
  );
} finally {
  await server.stop();
}
