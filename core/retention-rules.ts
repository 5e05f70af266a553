/**
 * The rules that keep backups, one group at a time (the planner's first half). Pure; the rules and
 * their guarantees are described in retention-planner.ts.
 */
import type { KeepReason, KeepRule, RetentionBackup, RetentionPolicy } from './retention-types.ts';
import { parseWalFileName } from './wal-names.ts';

export const DAY_MS = 24 * 60 * 60 * 1000;

export function toMs(value: Date | string, what: string): number {
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

export interface Candidate {
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

export function describeRules(policy: RetentionPolicy): string {
  const parts = [`minimum ${policy.minimumKeep}`];
  if (policy.keepLast !== undefined) parts.push(`keep-last ${policy.keepLast}`);
  for (const { rule, field } of PERIODS) if (policy[field]) parts.push(`${rule} ${policy[field]}`);
  if (policy.pitrWindowDays !== undefined) parts.push(`PITR window ${policy.pitrWindowDays} days`);
  return parts.join(', ');
}

/** Each backup once, with its stop time and start position parsed, newest first. */
export function candidatesOf(backups: readonly RetentionBackup[]): Candidate[] {
  const seenIds = new Set<string>();
  const candidates: Candidate[] = backups.map((backup) => {
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
  return candidates.sort(byNewest);
}

/** Applies the rules to every group: base backups together, logical backups per database. */
export function applyRules(
  candidates: readonly Candidate[],
  policy: RetentionPolicy,
  windowStartMs: number | undefined,
): void {
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
}
