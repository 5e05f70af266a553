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
import { parseWalFileName, type WalFileName } from './wal-names.ts';

/** A backup as the planner sees it: what its manifest says, plus whether a restore of it was verified. */
export interface RetentionBackup {
  readonly backupId: string;
  readonly kind: 'logical' | 'base' | 'stream';
  /** Stream backups: the name they were taken under; each name is its own group. */
  readonly streamName?: string;
  /** When the backup became complete: the time the repository stored its manifest (a server time). */
  readonly stopTime: Date | string;
  /** Logical backups: the databases dumped; empty or absent for a globals-only backup. */
  readonly databases?: readonly string[];
  /** Base backups: the timeline the backup was taken on. */
  readonly timeline?: number;
  /** Base backups: the first WAL file a restore needs. Without it, no WAL is deleted. */
  readonly startWalFile?: string;
  /** Base backups: the WAL file where the backup becomes consistent. */
  readonly stopWalFile?: string;
  readonly manifestKey: string;
  /** Every data object of the backup (dumps, globals, base and tablespace archives), without the manifest. */
  readonly objectKeys: readonly string[];
  /** A restore verification of this backup succeeded. */
  readonly verified: boolean;
}

/** One WAL object on the target. */
export interface RetentionWalFile {
  readonly key: string;
  /** The WAL file name, e.g. `000000010000000000000003` or `00000002.history` (keys.ts `parseWalKey`). */
  readonly walFileName: string;
  /** When the file was archived (the object's last-modified time); for reports only. */
  readonly time?: Date | string;
  readonly sizeBytes?: number;
}

/** What one target keeps. Every count is a non-negative integer; absent means the rule is off. */
export interface RetentionPolicy {
  readonly keepLast?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
  readonly keepYearly?: number;
  /** Base backups and WAL: every point in the last `pitrWindowDays` days stays restorable. */
  readonly pitrWindowDays?: number;
  /** The newest `minimumKeep` backups of each group are always kept; at least 1. */
  readonly minimumKeep: number;
}

export interface RetentionInput {
  readonly backups: readonly RetentionBackup[];
  readonly walFiles: readonly RetentionWalFile[];
  readonly policy: RetentionPolicy;
  readonly now: Date | string;
  /** Keys whose Object Lock retain-until date is after `now`: never deleted. */
  readonly lockedKeys?: Iterable<string>;
}

export type KeepRule =
  | 'minimum'
  | 'newest-verified'
  | 'keep-last'
  | 'keep-daily'
  | 'keep-weekly'
  | 'keep-monthly'
  | 'keep-yearly'
  | 'pitr-window'
  | 'pitr-anchor';

export interface KeepReason {
  readonly rule: KeepRule;
  /** For whom (the group) and, for period rules, which period: `base: keep-daily 2026-11-20`. */
  readonly detail: string;
}

export interface BackupDecision {
  readonly backupId: string;
  readonly kind: 'logical' | 'base' | 'stream';
  readonly databases: readonly string[];
  /** ISO 8601. */
  readonly stopTime: string;
  readonly verified: boolean;
  /** `locked`: not kept by any rule, but left because some of its objects are under Object Lock. */
  readonly action: 'keep' | 'delete' | 'locked';
  /** Every rule that keeps it; empty unless `action` is `keep`. */
  readonly keptBy: readonly KeepReason[];
  /** One sentence for people. */
  readonly reason: string;
}

export interface PlannedDeletion {
  readonly key: string;
  readonly kind: 'manifest' | 'backup-object' | 'wal';
  readonly backupId?: string;
  readonly walFileName?: string;
  readonly reason: string;
}

export interface LockedSkip {
  readonly key: string;
  readonly backupId?: string;
  readonly walFileName?: string;
  readonly reason: string;
}

export interface RetentionPlan {
  /** ISO 8601. */
  readonly now: string;
  readonly policy: RetentionPolicy;
  /** `[now - pitrWindowDays, now]` in ISO 8601, when the policy has a window. */
  readonly pitrWindow?: { readonly start: string; readonly end: string };
  /** One decision per input backup, newest first. */
  readonly backups: readonly BackupDecision[];
  /** What to delete, in the order to delete it. */
  readonly deletions: readonly PlannedDeletion[];
  /** Objects that would be deleted but are under Object Lock: left alone. */
  readonly locked: readonly LockedSkip[];
  readonly wal: {
    /** WAL at or after this position (any timeline) is kept; absent when all WAL is kept. */
    readonly keepFrom?: { readonly walFileName: string; readonly backupId: string };
    /** Why all WAL is kept, when it is. */
    readonly keepAllReason?: string;
    readonly keptCount: number;
    readonly deletedCount: number;
  };
  /** Things an operator should look at; the plan is still safe. */
  readonly warnings: readonly string[];
  readonly summary: {
    readonly backupsKept: number;
    readonly backupsDeleted: number;
    readonly backupsLocked: number;
    readonly objectsDeleted: number;
    /** Sum of the known sizes of deleted WAL files (backup object sizes are not in the input). */
    readonly walBytesDeleted: number;
  };
}

const DAY_MS = 24 * 60 * 60 * 1000;

function toMs(value: Date | string, what: string): number {
  const ms = value instanceof Date ? value.getTime() : Date.parse(value);
  if (!Number.isFinite(ms)) throw new Error(`invalid ${what} "${String(value)}": expected an ISO 8601 time`);
  return ms;
}

function assertCount(value: number | undefined, name: string, min: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`invalid retention policy: ${name} is ${value}; use an integer of at least ${min}`);
  }
}

/** Throws, naming the field, unless `policy` is usable. */
export function assertRetentionPolicy(policy: RetentionPolicy): void {
  assertCount(policy.minimumKeep, 'minimumKeep', 1);
  if (policy.minimumKeep === undefined) {
    throw new Error('invalid retention policy: minimumKeep is missing; set it to at least 1');
  }
  for (const name of ['keepLast', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'] as const) {
    assertCount(policy[name], name, 0);
  }
  const days = policy.pitrWindowDays;
  if (days !== undefined && !(Number.isFinite(days) && days >= 0)) {
    throw new Error(
      `invalid retention policy: pitrWindowDays is ${days}; use a number of days of at least 0`,
    );
  }
}

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

interface Candidate {
  readonly backup: RetentionBackup;
  readonly stopMs: number;
  /** Base backups: the stream position of startWalFile, when it parses. */
  readonly startPosition: string | undefined;
  readonly keptBy: KeepReason[];
}

/** ISO 8601 week of a UTC time, as `2026-W47` (the week-year can differ from the calendar year). */
function isoWeek(ms: number): string {
  const d = new Date(ms);
  const day = d.getUTCDay() || 7;
  // The Thursday of this week decides the week-year.
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 4 - day);
  const year = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * DAY_MS)) + 1;
  return `${year}-W${String(week).padStart(2, '0')}`;
}

const PERIODS: { rule: KeepRule; field: keyof RetentionPolicy; bucket: (ms: number) => string }[] = [
  { rule: 'keep-daily', field: 'keepDaily', bucket: (ms) => new Date(ms).toISOString().slice(0, 10) },
  { rule: 'keep-weekly', field: 'keepWeekly', bucket: isoWeek },
  { rule: 'keep-monthly', field: 'keepMonthly', bucket: (ms) => new Date(ms).toISOString().slice(0, 7) },
  { rule: 'keep-yearly', field: 'keepYearly', bucket: (ms) => new Date(ms).toISOString().slice(0, 4) },
];

/** Applies the count and period rules to one group, newest first. */
function applyGroupRules(
  group: string,
  members: readonly Candidate[],
  policy: RetentionPolicy,
  windowStartMs: number | undefined,
): void {
  const keep = (c: Candidate, rule: KeepRule, detail: string) => {
    c.keptBy.push({ rule, detail: `${group}: ${detail}` });
  };
  members.forEach((c, i) => {
    if (i < policy.minimumKeep) keep(c, 'minimum', `one of the ${policy.minimumKeep} newest`);
    if (policy.keepLast !== undefined && i < policy.keepLast)
      keep(c, 'keep-last', `one of the ${policy.keepLast} newest`);
  });
  const newestVerified = members.find((c) => c.backup.verified);
  if (newestVerified) keep(newestVerified, 'newest-verified', 'the newest verified backup');

  for (const { rule, field, bucket } of PERIODS) {
    const count = policy[field];
    if (!count) continue;
    const seen = new Set<string>();
    for (const c of members) {
      const period = bucket(c.stopMs);
      if (seen.has(period)) continue;
      if (seen.size >= count) break;
      seen.add(period);
      keep(c, rule, `newest of ${period}`);
    }
  }

  if (windowStartMs !== undefined) {
    const windowStart = new Date(windowStartMs).toISOString();
    for (const c of members) {
      if (c.stopMs >= windowStartMs)
        keep(c, 'pitr-window', `stopped inside the PITR window from ${windowStart}`);
    }
    const before = members.filter((c) => c.stopMs < windowStartMs);
    const newest = before[0];
    if (newest) keep(newest, 'pitr-anchor', `newest base backup before the PITR window start ${windowStart}`);
    // Backups that overlap: one that stopped earlier may have started later, and so needs less WAL
    // (a gap in the WAL between the two starts would make only that one reach the window).
    let latestStart: Candidate | undefined;
    for (const c of before) {
      if (c.startPosition !== undefined && (latestStart?.startPosition ?? '') < c.startPosition)
        latestStart = c;
    }
    if (latestStart && latestStart !== newest) {
      keep(
        latestStart,
        'pitr-anchor',
        `base backup before the PITR window start ${windowStart} that started last`,
      );
    }
  }
}

function byNewest(a: Candidate, b: Candidate): number {
  return b.stopMs - a.stopMs || (a.backup.backupId < b.backup.backupId ? 1 : -1);
}

function describeRules(policy: RetentionPolicy): string {
  const parts = [`minimum ${policy.minimumKeep}`];
  if (policy.keepLast !== undefined) parts.push(`keep-last ${policy.keepLast}`);
  for (const { rule, field } of PERIODS) if (policy[field]) parts.push(`${rule} ${policy[field]}`);
  if (policy.pitrWindowDays !== undefined) parts.push(`PITR window ${policy.pitrWindowDays} days`);
  return parts.join(', ');
}

/** Decides what one target keeps; see the module comment for the rules and guarantees. */
export function planRetention(input: RetentionInput): RetentionPlan {
  const { policy } = input;
  assertRetentionPolicy(policy);
  const nowMs = toMs(input.now, 'now');
  const locked = new Set(input.lockedKeys ?? []);
  const windowStartMs =
    policy.pitrWindowDays === undefined ? undefined : nowMs - policy.pitrWindowDays * DAY_MS;
  const warnings: string[] = [];

  const seenIds = new Set<string>();
  const candidates: Candidate[] = input.backups.map((backup) => {
    if (seenIds.has(backup.backupId)) {
      throw new Error(`backup ${backup.backupId} is listed twice; pass each manifest once`);
    }
    seenIds.add(backup.backupId);
    const startPosition =
      backup.startWalFile === undefined ? undefined : parseWalFileName(backup.startWalFile)?.position;
    return {
      backup,
      stopMs: toMs(backup.stopTime, `stopTime of backup ${backup.backupId}`),
      startPosition,
      keptBy: [],
    };
  });
  candidates.sort(byNewest);

  // Groups: base backups together; logical backups per database; stream backups per name.
  const groups = new Map<string, Candidate[]>();
  const addTo = (group: string, c: Candidate) => {
    const members = groups.get(group);
    if (members) members.push(c);
    else groups.set(group, [c]);
  };
  for (const c of candidates) {
    if (c.backup.kind === 'base') addTo('base', c);
    else if (c.backup.kind === 'stream') addTo(`stream ${JSON.stringify(c.backup.streamName ?? '')}`, c);
    else {
      const dbs = c.backup.databases ?? [];
      if (dbs.length === 0) addTo('logical (globals)', c);
      for (const db of new Set(dbs)) addTo(`logical ${JSON.stringify(db)}`, c);
    }
  }
  for (const [group, members] of groups) {
    applyGroupRules(group, members, policy, group === 'base' ? windowStartMs : undefined);
  }

  // A key that a kept backup also names is never deleted, whatever another manifest says about it.
  const keysOfKept = new Set(
    candidates
      .filter((c) => c.keptBy.length > 0)
      .flatMap((c) => [c.backup.manifestKey, ...c.backup.objectKeys]),
  );
  const rules = describeRules(policy);
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

  // WAL: everything before the oldest start position of a kept base backup may go.
  let keepFrom: { walFileName: string; backupId: string; position: string } | undefined;
  let keepAllReason: string | undefined;
  if (keptBases.length === 0) {
    keepAllReason = 'no base backup is kept, so no WAL is known to be unneeded';
  } else {
    for (const c of keptBases) {
      const start = c.backup.startWalFile === undefined ? undefined : parseWalFileName(c.backup.startWalFile);
      if (start?.position === undefined) {
        keepAllReason = `kept base backup ${c.backup.backupId} has no valid startWalFile (${JSON.stringify(c.backup.startWalFile)}), so the WAL it needs is unknown`;
        keepFrom = undefined;
        break;
      }
      if (keepFrom === undefined || start.position < keepFrom.position) {
        keepFrom = { walFileName: start.name, backupId: c.backup.backupId, position: start.position };
      }
    }
  }
  if (keepAllReason) warnings.push(`all WAL is kept: ${keepAllReason}`);

  const walDeletions: { wal: RetentionWalFile; parsed: WalFileName; position: string }[] = [];
  let walKept = 0;
  for (const wal of input.walFiles) {
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
  let walBytesDeleted = 0;
  for (const { wal } of walDeletions) {
    walBytesDeleted += wal.sizeBytes ?? 0;
    deletions.push({
      key: wal.key,
      kind: 'wal',
      walFileName: wal.walFileName,
      reason: `WAL ${wal.walFileName} precedes ${keepFrom?.walFileName}, the start of the oldest kept base backup ${keepFrom?.backupId}`,
    });
  }

  const count = (action: BackupDecision['action']) => decisions.filter((d) => d.action === action).length;
  return {
    now: new Date(nowMs).toISOString(),
    policy,
    ...(windowStartMs === undefined
      ? {}
      : { pitrWindow: { start: new Date(windowStartMs).toISOString(), end: new Date(nowMs).toISOString() } }),
    backups: decisions,
    deletions,
    locked: lockedSkips,
    wal: {
      ...(keepFrom ? { keepFrom: { walFileName: keepFrom.walFileName, backupId: keepFrom.backupId } } : {}),
      ...(keepAllReason ? { keepAllReason } : {}),
      keptCount: walKept,
      deletedCount: walDeletions.length,
    },
    warnings,
    summary: {
      backupsKept: count('keep'),
      backupsDeleted: count('delete'),
      backupsLocked: count('locked'),
      objectsDeleted: deletions.length,
      walBytesDeleted,
    },
  };
}
