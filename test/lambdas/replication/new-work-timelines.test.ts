/**
 * The hot path's WAL listing across timelines (lambdas/replication/cursors.ts `findNewWork`): with
 * one timeline in the cursor, one listing after its cursor finds that timeline's new segments and a
 * newer timeline's too; once the cursor holds both, each is listed after its own cursor.
 */
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walKey } from '../../../core/keys.ts';
import type { ClusterCursor } from '../../../core/replication-cursor.ts';
import type { Location } from '../../../lambdas/lib/locations.ts';
import { findNewWork } from '../../../lambdas/replication/cursors.ts';
import { type FaultProxy, startFaultProxy } from '../../support/fault-proxy.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { sha256 } from '../../support/seeded-archive.ts';

const CLUSTER = 'tl';
const SETTLED_LATER = 60 * 60 * 1000;
let server: S3Server;
let proxy: FaultProxy;
let ingest: Location;

const segment = (timeline: number, n: number) =>
  `${timeline.toString(16).toUpperCase().padStart(8, '0')}${n.toString(16).toUpperCase().padStart(16, '0')}`;

async function push(name: string): Promise<string> {
  const body = Buffer.from(`wal ${name}`);
  const key = walKey(CLUSTER, name, sha256(body));
  await ingest.storage.put(key, Readable.from([body]));
  return key;
}

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest'] });
  proxy = await startFaultProxy(server.endpoint);
  ingest = { name: 'ingest', storage: s3rverStorage(proxy.endpoint, 'ingest') };
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
});

describe('the hot path lists WAL after the cursor, across timelines', () => {
  it('finds a new timeline in the one listing after the old one’s cursor, then follows both', async () => {
    const old = [await push(segment(1, 1)), await push(segment(1, 2))];
    const now = new Date(Date.now() + SETTLED_LATER);
    const cursor: ClusterCursor = {
      manifests: { copied: [] },
      wal: { '00000001': { after: old[0], copied: [] } },
    };
    // The old timeline's last segment, and a promoted copy's new timeline with its history file.
    const late = await push(segment(1, 3));
    const history = await push('00000002.history');
    const newer = [await push(segment(2, 3)), await push(segment(2, 4))];

    const lists = proxy.counts.lists;
    const first = await findNewWork(ingest, CLUSTER, cursor, now, 100);
    // The manifests after their cursor, and the WAL after the one timeline's: two listings.
    expect(proxy.counts.lists - lists).toBe(2);
    expect(first.objects.map((o) => o.key)).toEqual([old[1], late, history, ...newer]);
    expect(first.next.wal['00000001']?.after).toBe(late);
    expect(first.next.wal['00000002']?.after).toBe(newer[1]);

    // Both timelines in the cursor: each is listed after its own, so a late segment of the old one
    // is still found.
    const later = [await push(segment(1, 4)), await push(segment(2, 5))];
    const second = await findNewWork(ingest, CLUSTER, first.next, now, 100);
    expect(second.objects.map((o) => o.key)).toEqual(later);
  });
});
