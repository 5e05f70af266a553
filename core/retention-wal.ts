/**
 * Which WAL a target may delete (the planner's second half): everything before the oldest start of
 * a kept base backup, on every timeline, and nothing when in doubt. retention-planner.ts explains
 * why that is enough.
 */
import type { Candidate } from './retention-rules.ts';
import type { LockedSkip, PlannedDeletion, RetentionWalFile } from './retention-types.ts';
import { parseWalFileName, type WalFileName } from './wal-names.ts';

/** Where the WAL that must be kept starts, or why all of it is kept. */
export interface WalKeepFrom {
  readonly keepFrom?: { readonly walFileName: string; readonly backupId: string; readonly position: string };
  readonly keepAllReason?: string;
}

/** The oldest start position of the kept base backups; no position when any of them has none. */
export function walKeepFrom(keptBases: readonly Candidate[]): WalKeepFrom {
  if (keptBases.length === 0) {
    return { keepAllReason: 'no base backup is kept, so no WAL is known to be unneeded' };
  }
  let keepFrom: WalKeepFrom['keepFrom'];
  for (const c of keptBases) {
    const start = c.backup.startWalFile === undefined ? undefined : parseWalFileName(c.backup.startWalFile);
    if (start?.position === undefined) {
      return {
        keepAllReason: `kept base backup ${c.backup.backupId} has no valid startWalFile (${JSON.stringify(c.backup.startWalFile)}), so the WAL it needs is unknown`,
      };
    }
    if (keepFrom === undefined || start.position < keepFrom.position) {
      keepFrom = { walFileName: start.name, backupId: c.backup.backupId, position: start.position };
    }
  }
  return keepFrom ? { keepFrom } : {};
}

/** What the WAL half of a plan decided. */
export interface WalPlan {
  /** Oldest first. */
  readonly deletions: PlannedDeletion[];
  readonly locked: LockedSkip[];
  readonly warnings: string[];
  readonly keptCount: number;
  readonly bytesDeleted: number;
}

/** Deletes the WAL files before `keepFrom` that no Object Lock holds, oldest first. */
export function planWal(
  walFiles: readonly RetentionWalFile[],
  { keepFrom }: WalKeepFrom,
  locked: ReadonlySet<string>,
): WalPlan {
  const warnings: string[] = [];
  const lockedSkips: LockedSkip[] = [];
  const walDeletions: { wal: RetentionWalFile; parsed: WalFileName; position: string }[] = [];
  let walKept = 0;
  for (const wal of walFiles) {
    const parsed = parseWalFileName(wal.walFileName);
    if (!parsed) {
      warnings.push(`WAL object ${wal.key} has an unrecognised file name "${wal.walFileName}"; kept`);
      walKept++;
      continue;
    }
    if (parsed.position === undefined || keepFrom === undefined || parsed.position >= keepFrom.position) {
      walKept++;
      continue;
    }
    if (locked.has(wal.key)) {
      lockedSkips.push({
        key: wal.key,
        walFileName: wal.walFileName,
        reason: `WAL ${wal.walFileName} is no longer needed but is under Object Lock; left until the lock expires`,
      });
      walKept++;
      continue;
    }
    walDeletions.push({ wal, parsed, position: parsed.position });
  }
  walDeletions.sort(
    (a, b) =>
      (a.position < b.position ? -1 : a.position > b.position ? 1 : 0) ||
      a.parsed.timeline - b.parsed.timeline ||
      (a.wal.key < b.wal.key ? -1 : 1),
  );
  let bytesDeleted = 0;
  const deletions: PlannedDeletion[] = [];
  for (const { wal } of walDeletions) {
    bytesDeleted += wal.sizeBytes ?? 0;
    deletions.push({
      key: wal.key,
      kind: 'wal',
      walFileName: wal.walFileName,
      reason: `WAL ${wal.walFileName} precedes ${keepFrom?.walFileName}, the start of the oldest kept base backup ${keepFrom?.backupId}`,
    });
  }
  return { deletions, locked: lockedSkips, warnings, keptCount: walKept, bytesDeleted };
}
