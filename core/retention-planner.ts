/**
 * The retention planner: from what one target holds (backups as described by their manifests,
 * WAL objects, keys under Object Lock) and a policy, decide what that target keeps and what it
 * deletes, with a reason for each. Pure: no I/O and no AWS imports; the retention Lambda lists the
 * target, calls {@link planRetention}, and deletes `plan.deletions` in order (or only reports
 * them on a dry run).
 *
 * ## Which backups are kept
 *
 * Backups are planned in groups: all base backups form one group; logical backups form one group
 * per database (a logical backup holding several databases belongs to each of their groups; one
 * holding only globals forms the group `(globals)`); stream backups (`pgkeep stream backup`) form one
 * group per stream name. Within a group, newest first by stopTime,
 * a backup is kept when any rule keeps it:
 *
 * - `minimum`: the `minimumKeep` newest (at least 1, so a group is never emptied).
 * - `newest-verified`: the newest backup whose restore was verified.
 * - `keep-last`: the `keepLast` newest.
 * - `keep-daily` / `keep-weekly` / `keep-monthly` / `keep-yearly`: the newest backup of each of
 *   the N most recent UTC days / ISO weeks / months / years that have a backup (periods without
 *   a backup do not count, as in borg and restic).
 * - base backups only, with `pitrWindowDays`: the window is `[now - pitrWindowDays, now]`.
 *   `pitr-window` keeps every base backup that stopped inside the window (or later); `pitr-anchor`
 *   keeps the newest base backup that stopped before the window's start, so the start of the
 *   window can be reached, and also, if another one, the backup stopping before the window start
 *   whose startWalFile is latest (backups that overlap in time).
 *
 * Every rule keeps more when its number grows, and the kept set is their union, so a stronger
 * policy never keeps less.
 *
 * ## Which WAL is kept
 *
 * A point in time t is restorable when some kept base backup stopped at or before t and every
 * WAL segment from its `startWalFile` up to the segment that covers t is kept, without a gap
 * (the segment that covers t is the first whose archive time is at or after t; it must also be
 * at or after the backup's `stopWalFile`, where the backup becomes consistent).
 *
 * With the rules above, for every t in the window and every base backup B that stopped at or
 * before t, a kept base backup K stopped at or before t and started no earlier than B (K is B
 * itself when B stopped inside the window, else the anchor that started last), so whenever B
 * reaches t, K reaches t with a part of the same WAL; and K needs only WAL at or after its own
 * start. So the planner keeps every WAL file whose position in the WAL stream is at or
 * after the oldest `startWalFile` of any kept base backup, on every timeline: PostgreSQL never
 * reads WAL before a backup's start, and keeping all timelines from there is the conservative
 * answer to branches the planner cannot see (history files are encrypted). Only WAL strictly
 * before that position is deleted. Moreover:
 *
 * - `.history` files are always kept: they are tiny and tell recovery how timelines branch.
 * - When no base backup is kept, when a kept one has no readable `startWalFile`, or when a WAL
 *   file name cannot be parsed, no WAL is deleted (or that file is kept): when in doubt, keep.
 * - The newest base backup is always kept (`minimum` >= 1), so a base backup in progress, whose
 *   manifest is not written yet, starts after everything that could be deleted. Objects that no
 *   manifest names (a backup in progress) are never deleted: the planner only deletes keys it
 *   was given.
 *
 * ## Object Lock
 *
 * Keys under Object Lock (retain-until after now) are never in the deletions. A backup that
 * would be deleted but has any locked object is left whole (`action: 'locked'`) and its locked
 * keys are reported; a locked WAL file is reported and left.
 *
 * ## Order of deletions
 *
 * For each deleted backup its manifest comes first, then its objects: the manifest is written
 * last and means "the backup exists", so an interrupted apply never leaves a manifest naming
 * missing objects. WAL comes after all backups, oldest first.
 */
import type { ValidatedManifest } from './manifest.ts';
import {
  applyRules,
  assertRetentionPolicy,
  type Candidate,
  candidatesOf,
  DAY_MS,
  describeRules,
  toMs,
} from './retention-rules.ts';
import type {
  BackupDecision,
  LockedSkip,
  PlannedDeletion,
  RetentionBackup,
  RetentionInput,
  RetentionPlan,
} from './retention-types.ts';
import { planWal, walKeepFrom } from './retention-wal.ts';

export { assertRetentionPolicy } from './retention-rules.ts';
export type * from './retention-types.ts';

/** The planner's view of a manifest: pass the manifest's key and whether a restore of it was verified. */
/**
 * The planner's view of a validated manifest: pass its key, whether a restore of it was verified,
 * and when the repository stored it. That server time, not the host-written `stopTime`, orders and
 * ages the backup, so a host cannot push a kept backup out of its slot with forged times.
 */
export function retentionBackupFromManifest(
  manifest: ValidatedManifest,
  manifestKey: string,
  verified: boolean,
  storedAt: Date,
): RetentionBackup {
  const databases = [
    ...new Set(manifest.objects.flatMap((o) => (o.role === 'dump' && o.database ? [o.database] : []))),
  ].sort();
  return {
    backupId: manifest.backupId,
    kind: manifest.kind,
    ...(manifest.streamName === undefined ? {} : { streamName: manifest.streamName }),
    stopTime: storedAt.toISOString(),
    databases,
    ...(manifest.timeline === undefined ? {} : { timeline: manifest.timeline }),
    ...(manifest.startWalFile === undefined ? {} : { startWalFile: manifest.startWalFile }),
    ...(manifest.stopWalFile === undefined ? {} : { stopWalFile: manifest.stopWalFile }),
    manifestKey,
    objectKeys: manifest.objects.map((o) => o.key),
    verified,
  };
}

/** Decides what one target keeps; see the module comment for the rules and guarantees. */
export function planRetention(input: RetentionInput): RetentionPlan {
  const { policy } = input;
  assertRetentionPolicy(policy);
  const nowMs = toMs(input.now, 'now');
  const locked = new Set(input.lockedKeys ?? []);
  const windowStartMs =
    policy.pitrWindowDays === undefined ? undefined : nowMs - policy.pitrWindowDays * DAY_MS;

  const candidates = candidatesOf(input.backups);
  applyRules(candidates, policy, windowStartMs);
  const backups = decideBackups(candidates, describeRules(policy), locked);
  const from = walKeepFrom(backups.keptBases);
  const wal = planWal(input.walFiles, from, locked);
  const warnings = [
    ...(from.keepAllReason ? [`all WAL is kept: ${from.keepAllReason}`] : []),
    ...wal.warnings,
  ];
  const deletions = [...backups.deletions, ...wal.deletions];
  const { decisions } = backups;
  const count = (action: BackupDecision['action']) => decisions.filter((d) => d.action === action).length;
  return {
    now: new Date(nowMs).toISOString(),
    policy,
    ...(windowStartMs === undefined
      ? {}
      : { pitrWindow: { start: new Date(windowStartMs).toISOString(), end: new Date(nowMs).toISOString() } }),
    backups: decisions,
    deletions,
    locked: [...backups.locked, ...wal.locked],
    wal: {
      ...(from.keepFrom
        ? { keepFrom: { walFileName: from.keepFrom.walFileName, backupId: from.keepFrom.backupId } }
        : {}),
      ...(from.keepAllReason ? { keepAllReason: from.keepAllReason } : {}),
      keptCount: wal.keptCount,
      deletedCount: wal.deletions.length,
    },
    warnings,
    summary: {
      backupsKept: count('keep'),
      backupsDeleted: count('delete'),
      backupsLocked: count('locked'),
      objectsDeleted: deletions.length,
      walBytesDeleted: wal.bytesDeleted,
    },
  };
}

/**
 * One decision per backup, newest first: kept (by which rules), deleted (manifest first, then its
 * objects, except keys a kept backup also names), or left whole because Object Lock holds a key.
 */
function decideBackups(
  candidates: readonly Candidate[],
  rules: string,
  locked: ReadonlySet<string>,
): {
  decisions: BackupDecision[];
  deletions: PlannedDeletion[];
  locked: LockedSkip[];
  keptBases: Candidate[];
} {
  // A key that a kept backup also names is never deleted, whatever another manifest says about it.
  const keysOfKept = new Set(
    candidates
      .filter((c) => c.keptBy.length > 0)
      .flatMap((c) => [c.backup.manifestKey, ...c.backup.objectKeys]),
  );
  const decisions: BackupDecision[] = [];
  const deletions: PlannedDeletion[] = [];
  const lockedSkips: LockedSkip[] = [];
  const keptBases: Candidate[] = [];
  for (const c of candidates) {
    const { backup } = c;
    const label = `${backup.kind} backup ${backup.backupId}`;
    const base = {
      backupId: backup.backupId,
      kind: backup.kind,
      databases: [...(backup.databases ?? [])],
      stopTime: new Date(c.stopMs).toISOString(),
      verified: backup.verified,
    };
    if (c.keptBy.length > 0) {
      if (backup.kind === 'base') keptBases.push(c);
      decisions.push({
        ...base,
        action: 'keep',
        keptBy: c.keptBy,
        reason: `${label} is kept by ${[...new Set(c.keptBy.map((k) => k.rule))].join(', ')}`,
      });
      continue;
    }
    const keys = [...new Set([backup.manifestKey, ...backup.objectKeys])].filter((k) => !keysOfKept.has(k));
    const lockedKeys = keys.filter((k) => locked.has(k));
    if (lockedKeys.length > 0) {
      const reason = `${label} is kept by no rule (${rules}) but ${lockedKeys.length} of its objects are under Object Lock; left whole until the lock expires`;
      decisions.push({ ...base, action: 'locked', keptBy: [], reason });
      for (const key of lockedKeys) lockedSkips.push({ key, backupId: backup.backupId, reason });
      continue;
    }
    const reason = `${label} (stopped ${base.stopTime}) is kept by no rule (${rules})`;
    decisions.push({ ...base, action: 'delete', keptBy: [], reason });
    for (const key of keys) {
      const kind = key === backup.manifestKey ? 'manifest' : 'backup-object';
      deletions.push({ key, kind, backupId: backup.backupId, reason });
    }
  }
  return { decisions, deletions, locked: lockedSkips, keptBases };
}
