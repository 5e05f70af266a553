/**
 * Ingest pruning, the planner: which of one cluster's objects the pipeline may delete from the
 * ingest bucket. Pure: no I/O; lambdas/retention/plan-ingest-prune.ts gathers the listings.
 *
 * Ingest keeps a window of `keepDays`. An object older than that (by ingest's own LastModified,
 * never a time the host wrote) goes only when every target is done with it: the target holds it
 * at ingest's size (a WAL segment also when a bundle there holds it), or the target's own
 * retention policy drops it (the plan replication's reconciliation uses, so it is never copied
 * back). So whatever a target's policy keeps stays either at that target or in ingest.
 *
 * - A backup goes whole, its objects first and its manifest last (an interrupted run leaves a
 *   manifest that names what is left, and the next run finishes it). Backups are taken oldest
 *   first, and the first one that must stay stops the walk: what ingest keeps is always its newest
 *   backups, so the retention plan on ingest keeps what it kept before, only fewer of the old ones
 *   (docs/architecture.md, "Trust model").
 * - A WAL segment goes when old and done, and only when it comes before the start of the oldest
 *   base backup that stays: ingest's backups stay restorable from ingest alone. Segments go oldest
 *   first up to the first that must stay, so pruning never leaves a hole in ingest's WAL. When no
 *   base backup stays, no backup in ingest needs old WAL (one still running started within a day,
 *   and `keepDays` is more than that), so the same age-and-done rule alone decides; with one whose
 *   start is unknown no WAL goes. `.history` files always stay (tiny; recovery needs them to
 *   follow timelines).
 * - Only keys of validated manifests and WAL keys are planned: anything else under the cluster's
 *   prefix (a backup in progress, a rejected manifest and what it names) stays.
 */
import { DAY_MS } from './retention-rules.ts';
import type { RetentionBackup, RetentionWalFile } from './retention-types.ts';
import { parseWalFileName } from './wal-names.ts';

/** An object as ingest lists it. */
export interface IngestObject {
  readonly key: string;
  readonly sizeBytes: number;
  readonly lastModified: Date;
}

/** What one target has done with ingest's keys. */
export interface PruneTarget {
  readonly name: string;
  /** Ingest keys the target holds at the size ingest has. */
  readonly holds: ReadonlySet<string>;
  /** Ingest keys the target's retention policy drops (so it need not hold them). */
  readonly drops: ReadonlySet<string>;
}

export interface IngestPruneInput {
  /** Ingest's validated backups of the cluster, aged by when ingest stored the manifest (`stopTime`). */
  readonly backups: readonly RetentionBackup[];
  readonly walFiles: readonly RetentionWalFile[];
  /** Every object under the cluster's prefix in ingest, by key. */
  readonly objects: ReadonlyMap<string, IngestObject>;
  readonly targets: readonly PruneTarget[];
  readonly keepDays: number;
  readonly now: Date;
}

export interface PrunedKey {
  readonly key: string;
  readonly reason: string;
}

export interface IngestPrunePlan {
  /** In the order to delete: each backup's objects then its manifest, oldest backup first; then WAL, oldest first. */
  readonly deletions: PrunedKey[];
  readonly backupsPruned: number;
  readonly walPruned: number;
  /** Why the walk over backups stopped before the window, or why no WAL goes; for the run's report. */
  readonly kept: string[];
}

/** The targets of `targets` that are not done with `key`: neither hold it nor drop it. */
function notDoneAt(targets: readonly PruneTarget[], key: string): string[] {
  return targets.filter((t) => !t.holds.has(key) && !t.drops.has(key)).map((t) => t.name);
}

/** Plans what to delete from ingest for one cluster (see the module comment). */
export function planIngestPrune(input: IngestPruneInput): IngestPrunePlan {
  const { objects, targets } = input;
  if (targets.length === 0)
    return {
      deletions: [],
      backupsPruned: 0,
      walPruned: 0,
      kept: ['no targets: nothing is pruned from ingest, which holds the only copy'],
    };
  const cutoff = input.now.getTime() - input.keepDays * DAY_MS;
  const old = (time: Date | string | undefined) => time !== undefined && new Date(time).getTime() < cutoff;
  const deletions: PrunedKey[] = [];
  const kept: string[] = [];
  const byAge = [...input.backups].sort(
    (a, b) =>
      new Date(a.stopTime).getTime() - new Date(b.stopTime).getTime() ||
      (a.backupId < b.backupId ? -1 : a.backupId > b.backupId ? 1 : 0),
  );
  let pruned = 0;
  for (const backup of byAge) {
    if (!old(backup.stopTime)) break;
    // Objects gone from ingest were deleted by an earlier, interrupted run: nothing left to check.
    const present = backup.objectKeys.filter((key) => objects.has(key));
    const blocking = [...present, backup.manifestKey]
      .map((key) => ({ key, at: notDoneAt(targets, key) }))
      .find((b) => b.at.length > 0);
    if (blocking) {
      kept.push(
        `backup ${backup.backupId} and every newer one stay: ${blocking.key} is not at ${blocking.at.join(', ')} (or is there at another size) and that target's retention keeps it`,
      );
      break;
    }
    const reason = `backup ${backup.backupId} is older than ${input.keepDays} days and every target holds it or its retention dropped it`;
    for (const key of present) deletions.push({ key, reason });
    deletions.push({ key: backup.manifestKey, reason });
    pruned += 1;
  }
  const staying = byAge.slice(pruned).filter((b) => b.kind === 'base');
  // The WAL position before which segments may go: the oldest staying base backup's start, no
  // bound when none stays, nothing when a staying one's start is unknown.
  let keepFrom: string | undefined;
  let walMayGo = true;
  for (const base of staying) {
    const start = base.startWalFile === undefined ? undefined : parseWalFileName(base.startWalFile)?.position;
    if (start === undefined) {
      kept.push(`no WAL is pruned: base backup ${base.backupId} stays and its start WAL file is unknown`);
      walMayGo = false;
      break;
    }
    if (keepFrom === undefined || start < keepFrom) keepFrom = start;
  }
  let walPruned = 0;
  const wal = input.walFiles
    .map((file) => ({ file, position: parseWalFileName(file.walFileName)?.position }))
    .filter(
      (w): w is { file: RetentionWalFile; position: string } =>
        walMayGo && w.position !== undefined && (keepFrom === undefined || w.position < keepFrom),
    )
    .sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
  for (const { file } of wal) {
    const listed = objects.get(file.key);
    if (!listed) continue;
    const at = notDoneAt(targets, file.key);
    // Oldest first, up to the first that stays: pruning never makes a hole in ingest's WAL, which
    // `pgkeep check --archive` and freshness would report as a gap.
    if (!old(listed.lastModified) || at.length > 0) {
      kept.push(
        at.length > 0
          ? `WAL from ${file.walFileName} on stays: it is not at ${at.join(', ')} (or is there at another size) and that target's retention keeps it`
          : `WAL from ${file.walFileName} on stays: it is newer than ${input.keepDays} days`,
      );
      break;
    }
    deletions.push({
      key: file.key,
      reason: `WAL ${file.walFileName} is older than ${input.keepDays} days, before the oldest base backup ingest keeps, and every target holds it or its retention dropped it`,
    });
    walPruned += 1;
  }
  return { deletions, backupsPruned: pruned, walPruned, kept };
}
