/**
 * How far replication to one target has got in one cluster, so a run lists only what is new
 * (S3's StartAfter) instead of the whole archive. docs/architecture.md, "Replication at scale".
 *
 * Keys sort by time (WAL by segment name, manifests by backup id = start time), but not strictly
 * by arrival: a parallel push may store segment N-1 after N, and a long base backup writes its
 * manifest hours after a later hourly dump wrote its own. So a stream's cursor has two parts:
 *
 * - `after`: every key up to it is copied and nothing new can still arrive before it. It only moves
 *   over keys that are settled (see {@link isSettled}), and only once a run copied them;
 * - `copied`: manifests after `after` that a run already copied (the hot path skips them). WAL
 *   keeps no such list: the few unsettled segments are listed again and found present.
 *
 * Pure: no I/O. The pipeline stores cursors in ingest under `pipeline/`, which no host can write.
 */
import { z } from 'zod';
import { backupIdOfManifestKey, backupIdTime } from './keys.ts';

/** A late parallel WAL push still lands before the cursor passes its neighbours. */
export const SETTLE_MS = 15 * 60 * 1000;
/**
 * The longest a backup may run: a manifest can appear this long after its backup id's time (the
 * start), so the manifest cursor never passes a backup id younger than this.
 */
export const MAX_BACKUP_MS = 24 * 60 * 60 * 1000;

const StreamSchema = z.strictObject({
  after: z.string().min(1).optional(),
  copied: z.array(z.string().min(1)).default([]),
});
export const ClusterCursorSchema = z.strictObject({
  manifests: StreamSchema,
  /** Per timeline (8 hex digits). */
  wal: z.record(z.string().regex(/^[0-9A-F]{8}$/), StreamSchema),
});
export const TargetCursorsSchema = z.strictObject({
  format: z.literal('pgkeep.replication-cursor.v1'),
  clusters: z.record(z.string(), ClusterCursorSchema),
});

export type StreamCursor = z.infer<typeof StreamSchema>;
export type ClusterCursor = z.infer<typeof ClusterCursorSchema>;
export type TargetCursors = z.infer<typeof TargetCursorsSchema>;

export const EMPTY_CURSORS: TargetCursors = { format: 'pgkeep.replication-cursor.v1', clusters: {} };

export function parseTargetCursors(json: string, source: string): TargetCursors {
  const parsed = TargetCursorsSchema.safeParse(JSON.parse(json));
  if (!parsed.success)
    throw new Error(
      `invalid replication cursor ${source}: ${parsed.error.issues[0]?.message ?? 'wrong shape'}; delete it and start a run with {"reconcile": true}`,
    );
  return parsed.data;
}

/**
 * What a round keeps of a per-cluster object it writes (the cursors, the lag record): when it
 * planned every configured cluster, only their entries, so a cluster removed from the config is
 * forgotten instead of kept forever; else every entry (a round that planned fewer, such as a new
 * manifest's run or one cut at the per-run limit, leaves the others as they are).
 */
export function configuredEntries<T>(
  clusters: Readonly<Record<string, T>>,
  planned: readonly string[],
  configured: readonly string[],
): Record<string, T> {
  const done = new Set(planned);
  if (!configured.every((cluster) => done.has(cluster))) return { ...clusters };
  const keep = new Set(configured);
  return Object.fromEntries(Object.entries(clusters).filter(([cluster]) => keep.has(cluster)));
}

/** A listed key and when the repository stored it. */
export interface ListedKey {
  readonly key: string;
  readonly lastModified: Date;
}

/**
 * Whether nothing can still arrive before `key` in its stream: it was stored more than
 * {@link SETTLE_MS} ago and, for a manifest, its backup started more than {@link MAX_BACKUP_MS} ago.
 */
export function isSettled(object: ListedKey, now: Date): boolean {
  if (now.getTime() - object.lastModified.getTime() < SETTLE_MS) return false;
  const backupId = backupIdOfManifestKey(object.key);
  return backupId === undefined || now.getTime() - backupIdTime(backupId).getTime() >= MAX_BACKUP_MS;
}

/**
 * The stream's cursor once every key in `handled` is at the target (copied, found present, or
 * dropped by retention): `handled` is ascending, all after `cursor.after`, with no gap in the
 * listing before its last key. `after` moves over the settled keys at its start; manifests behind
 * the first unsettled one are remembered in `copied`.
 */
export function advanceStream(
  cursor: StreamCursor | undefined,
  handled: readonly ListedKey[],
  now: Date,
  remember: boolean,
): StreamCursor {
  let after = cursor?.after;
  let i = 0;
  while (i < handled.length && isSettled(handled[i] as ListedKey, now))
    after = (handled[i++] as ListedKey).key;
  const copied = new Set(remember ? (cursor?.copied ?? []) : []);
  if (remember) for (const object of handled.slice(i)) copied.add(object.key);
  return {
    ...(after ? { after } : {}),
    copied: [...copied].filter((key) => after === undefined || key > after).sort(),
  };
}
