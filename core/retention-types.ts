/** What the retention planner takes and returns; retention-planner.ts has the rules. */

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
