/**
 * An archive of generated objects in a stopped-or-running s3rver's directory, written in its
 * on-disk layout (`<bucket>/<key>._S3rver_object`; node_modules/s3rver/lib/stores/filesystem.js):
 * hundreds of thousands of objects in seconds, where uploading them would take many minutes. Bodies
 * are tiny and manifests are placeholders: only what a replication hot path never reads.
 * Used by test/lambdas/replication-scale.test.ts and bench/replication-plan.ts.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { logicalDumpKey, manifestKey, walKey } from '../../core/keys.ts';
import type { TargetCursors } from '../../core/replication-cursor.ts';

const BACKUPS_PER_100 = 3; // of every 100 objects: 3 backups (dump + manifest each), the rest WAL

export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
export const walName = (segment: number) => `00000001${segment.toString(16).toUpperCase().padStart(16, '0')}`;
/** Backup ids one minute apart from 2025-01-01, so `n` orders them. */
export const backupIdAt = (n: number) =>
  `${new Date(Date.UTC(2025, 0, 1) + n * 60_000)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}Z$/, 'Z')}-${(n % 0x10000).toString(16).padStart(4, '0')}`;

/**
 * Seeds `perCluster` objects into every cluster with WAL segments and backup numbers from `from`
 * on, into `<directory>/<bucket>`.
 */
export function seedArchive(
  directory: string,
  bucket: string,
  clusters: readonly string[],
  perCluster: number,
  from: number,
): void {
  const made = new Set<string>();
  const seedObject = (key: string, body: string) => {
    const file = path.join(directory, bucket, `${key}._S3rver_object`);
    const dir = path.dirname(file);
    if (!made.has(dir)) {
      mkdirSync(dir, { recursive: true });
      made.add(dir);
    }
    writeFileSync(file, body);
  };
  for (const cluster of clusters) {
    const backups = Math.floor((perCluster * BACKUPS_PER_100) / 100);
    for (let i = 0; i < backups; i++) {
      const id = backupIdAt(from + i);
      seedObject(logicalDumpKey(cluster, 'app', id), 'd');
      seedObject(manifestKey(cluster, id), '{}');
    }
    for (let i = 0; i < perCluster - 2 * backups; i++)
      seedObject(walKey(cluster, walName(from + i), sha256(Buffer.from(`${cluster}${from + i}`))), 'w');
  }
}

/** Cursors as a run that copied everything up to number `last` leaves them. */
export function cursorsAt(clusters: readonly string[], last: number): TargetCursors {
  const out: TargetCursors['clusters'] = {};
  for (const cluster of clusters)
    out[cluster] = {
      manifests: { after: manifestKey(cluster, backupIdAt(last)), copied: [] },
      wal: { '00000001': { after: walKey(cluster, walName(last), sha256(Buffer.from('x'))), copied: [] } },
    };
  return { format: 'pgkeep.replication-cursor.v1', clusters: out };
}
