/**
 * Property tests of the retention planner on random histories of one cluster: WAL segments over
 * time (crossing log-id boundaries, with timeline switches and missing segments), base backups
 * that may overlap, logical dumps of two databases, random policies and random Object Locks.
 *
 * The restorability oracle is the planner's definition (core/retention-planner.ts) evaluated on a
 * linear history: a point t is restorable from a set of backups and WAL when some base backup
 * stopped at or before t and every segment of the history from its start up to the first
 * segment archived at or after t (and at or after its stop segment) is there, together with the
 * history file of every timeline the walk enters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  planRetention,
  type RetentionBackup,
  type RetentionInput,
  type RetentionPlan,
  type RetentionPolicy,
  type RetentionWalFile,
} from '../../core/retention-planner.ts';
import { historyFileName, walSegmentFileNameFromNumber } from '../../core/wal-names.ts';

const DAY = 24 * 60 * 60 * 1000;
const T0 = Date.parse('2026-01-01T00:00:00Z');
const NUM_RUNS = 400;

interface BaseInfo {
  readonly backup: RetentionBackup;
  /** Index into the history of the start and stop segments. */
  readonly start: number;
  readonly stop: number;
  readonly stopMs: number;
}

interface History {
  readonly input: RetentionInput;
  /** Archive time of segment i of the history. */
  readonly times: readonly number[];
  /** Timeline of segment i of the history. */
  readonly timelines: readonly number[];
  /** Key of segment i, or undefined when it was never archived. */
  readonly segmentKeys: readonly (string | undefined)[];
  /** Key of the history file of each timeline above 1. */
  readonly historyKeys: ReadonlyMap<number, string>;
  readonly bases: readonly BaseInfo[];
  readonly nowMs: number;
}

const optionalCount = (max: number) => fc.option(fc.integer({ min: 0, max }), { nil: undefined, freq: 2 });

const policyArb: fc.Arbitrary<RetentionPolicy> = fc.record({
  keepLast: optionalCount(6),
  keepDaily: optionalCount(8),
  keepWeekly: optionalCount(4),
  keepMonthly: optionalCount(3),
  keepYearly: optionalCount(2),
  pitrWindowDays: fc.option(fc.double({ min: 0, max: 40, noNaN: true }), { nil: undefined }),
  minimumKeep: fc.integer({ min: 1, max: 3 }),
});

/**
 * A number spread evenly over [min, max). fc.double is not: it picks evenly among representable
 * doubles, which are mostly tiny, and its bias favours the bounds, so every backup would sit at
 * the first segment and every window would be empty.
 */
function uniform(min: number, max: number): fc.Arbitrary<number> {
  return fc.noBias(fc.integer({ min: 0, max: 999_999 })).map((x) => min + ((max - min) * x) / 1_000_000);
}

/**
 * A history of up to `segments` WAL segments. Long histories exercise periods and log-id
 * boundaries; short ones with long backups make backups overlap around WAL gaps.
 */
function historyShape(segments: number, maxSpan: number, maxBases: number) {
  // Positions are fractions of the history's length, so they land inside it whatever its length.
  const fraction = uniform(0, 1);
  return fc.record({
    firstSegment: fc.integer({ min: 0, max: 700 }),
    steps: fc
      .integer({ min: 1, max: segments })
      .chain((n) =>
        fc.array(fc.noBias(fc.integer({ min: 60_000, max: DAY })), { minLength: n, maxLength: n }),
      ),
    switches: fc.array(fraction, { maxLength: 3 }),
    gaps: fc.oneof(fc.constant<number[]>([]), fc.array(fraction, { maxLength: 2 })),
    bases: fc.array(
      fc.record({
        at: fraction,
        span: fc.integer({ min: 0, max: maxSpan }),
        stopFraction: uniform(0.01, 1),
        // Rarely verified: the newest verified backup is kept whatever the policy, which hides the other rules.
        verified: fc.integer({ min: 0, max: 4 }).map((x) => x === 0),
      }),
      { minLength: 1, maxLength: maxBases },
    ),
    logical: fc.array(
      fc.record({ at: fraction, databases: fc.subarray(['a', 'b']), verified: fc.boolean() }),
      {
        maxLength: 8,
      },
    ),
    nowAfter: fc.integer({ min: 0, max: DAY }),
    lockedPicks: fc.array(fc.nat(), { maxLength: 6 }),
  });
}

const historyShapeArb = fc.oneof(historyShape(60, 2, 14), historyShape(8, 4, 5));

type HistoryShape = typeof historyShapeArb extends fc.Arbitrary<infer T> ? T : never;

function buildHistory(shape: HistoryShape, policy: RetentionPolicy): History {
  const n = shape.steps.length;
  const times: number[] = [];
  let t = T0;
  for (const step of shape.steps) {
    t += step;
    times.push(t);
  }
  const at = (f: number) => Math.floor(f * n);
  const switches = shape.switches.map((f) => 1 + Math.floor(f * (n - 1))).filter((i) => i < n);
  const gaps = new Set(shape.gaps.map(at));
  const timelines = times.map((_, i) => 1 + new Set(switches.filter((s) => s <= i)).size);
  const walFiles: RetentionWalFile[] = [];
  const addWal = (walFileName: string, time: number) => {
    const key = `v1/c/wal/${walFileName.slice(0, 8)}/${walFileName}-0000000000000000.zst.age`;
    walFiles.push({ key, walFileName, time: new Date(time).toISOString(), sizeBytes: 16 });
    return key;
  };
  const segmentKeys: (string | undefined)[] = [];
  const historyKeys = new Map<number, string>();
  for (let i = 0; i < n; i++) {
    const tl = timelines[i]!;
    const segNo = shape.firstSegment + i;
    if (i > 0 && tl !== timelines[i - 1]) {
      // A promotion: the old timeline's last segment is archived as .partial, the new one's history file appears.
      addWal(`${walSegmentFileNameFromNumber(tl - 1, segNo)}.partial`, times[i - 1]! + 1);
      historyKeys.set(tl, addWal(historyFileName(tl), times[i - 1]! + 1));
    }
    segmentKeys.push(gaps.has(i) ? undefined : addWal(walSegmentFileNameFromNumber(tl, segNo), times[i]!));
  }

  const bases: BaseInfo[] = [];
  const backups: RetentionBackup[] = [];
  shape.bases.forEach((b, j) => {
    const start = at(b.at);
    const stop = Math.min(start + b.span, n - 1);
    const previous = stop === 0 ? times[0]! - 60_000 : times[stop - 1]!;
    const startedAfter = start === 0 ? times[0]! - 60_000 : times[start - 1]!;
    // The backup stops inside its stop segment, and no earlier than it started.
    const stopMs = Math.max(
      startedAfter + 1,
      Math.round(previous + b.stopFraction * (times[stop]! - previous)),
    );
    const backupId = `base-${String(j).padStart(2, '0')}`;
    const segNo = shape.firstSegment + start;
    const backup: RetentionBackup = {
      backupId,
      kind: 'base',
      stopTime: new Date(stopMs).toISOString(),
      timeline: timelines[start]!,
      startWalFile: walSegmentFileNameFromNumber(timelines[start]!, segNo),
      stopWalFile: walSegmentFileNameFromNumber(timelines[stop]!, shape.firstSegment + stop),
      manifestKey: `v1/c/manifests/${backupId}.json`,
      objectKeys: [`v1/c/base/${backupId}/base.tar.zst.age`],
      verified: b.verified,
    };
    backups.push(backup);
    bases.push({ backup, start, stop, stopMs });
  });
  shape.logical.forEach((l, j) => {
    const backupId = `logical-${String(j).padStart(2, '0')}`;
    const stopMs = times[at(l.at)]! - 1000;
    backups.push({
      backupId,
      kind: 'logical',
      stopTime: new Date(stopMs).toISOString(),
      databases: l.databases,
      manifestKey: `v1/c/manifests/${backupId}.json`,
      objectKeys: [
        `v1/c/logical/_globals/${backupId}/globals.sql.zst.age`,
        ...l.databases.map((db) => `v1/c/logical/${db}/${backupId}/dump.zst.age`),
      ],
      verified: l.verified,
    });
  });

  const allKeys = [
    ...backups.flatMap((b) => [b.manifestKey, ...b.objectKeys]),
    ...walFiles.map((w) => w.key),
  ];
  const lockedKeys = new Set(shape.lockedPicks.map((p) => allKeys[p % allKeys.length]!));
  const nowMs = times[n - 1]! + shape.nowAfter;
  return {
    input: { backups, walFiles, policy, now: new Date(nowMs).toISOString(), lockedKeys },
    times,
    timelines,
    segmentKeys,
    historyKeys,
    bases,
    nowMs,
  };
}

/** The oracle: can `t` be reached from the base backups and WAL keys that exist? */
function restorable(
  h: History,
  t: number,
  baseExists: (b: BaseInfo) => boolean,
  walExists: (key: string) => boolean,
) {
  return h.bases.some((b) => {
    if (b.stopMs > t || !baseExists(b)) return false;
    for (let k = b.start; k < h.times.length; k++) {
      const key = h.segmentKeys[k];
      if (key === undefined || !walExists(key)) return false;
      const tl = h.timelines[k]!;
      if (tl > h.timelines[b.start]!) {
        const history = h.historyKeys.get(tl);
        if (history === undefined || !walExists(history)) return false;
      }
      if (k >= b.stop && h.times[k]! >= t) return true;
    }
    return false;
  });
}

const everything = () => true;

function deletedKeys(plan: RetentionPlan): Set<string> {
  return new Set(plan.deletions.map((d) => d.key));
}

/** Points to test in the window: its ends, 20 between, every archive and stop time in it, and just after each. */
function pointsInWindow(h: History, windowStart: number): number[] {
  const even = Array.from({ length: 20 }, (_, i) => windowStart + ((h.nowMs - windowStart) * i) / 20);
  const candidates = [windowStart, h.nowMs, ...even, ...h.times, ...h.bases.map((b) => b.stopMs)].flatMap(
    (x) => [x, x + 1],
  );
  return [...new Set(candidates)].filter((x) => x >= windowStart && x <= h.nowMs);
}

const scenarioArb = fc
  .tuple(historyShapeArb, policyArb)
  .map(([shape, policy]) => buildHistory(shape, policy));

/** What to add to a policy to make it stronger: larger counts, a longer window, a higher minimum. */
const strengtheningArb = fc.record({
  keepLast: optionalCount(3),
  keepDaily: optionalCount(3),
  keepWeekly: optionalCount(2),
  keepMonthly: optionalCount(2),
  keepYearly: optionalCount(1),
  pitrWindowDays: fc.option(fc.double({ min: 0, max: 20, noNaN: true }), { nil: undefined }),
  minimumKeep: fc.integer({ min: 0, max: 2 }),
});

type Strengthening = typeof strengtheningArb extends fc.Arbitrary<infer T> ? T : never;

function strengthen(p: RetentionPolicy, d: Strengthening): RetentionPolicy {
  const add = (a: number | undefined, b: number | undefined) =>
    a === undefined && b === undefined ? undefined : (a ?? 0) + (b ?? 0);
  return {
    keepLast: add(p.keepLast, d.keepLast),
    keepDaily: add(p.keepDaily, d.keepDaily),
    keepWeekly: add(p.keepWeekly, d.keepWeekly),
    keepMonthly: add(p.keepMonthly, d.keepMonthly),
    keepYearly: add(p.keepYearly, d.keepYearly),
    pitrWindowDays: add(p.pitrWindowDays, d.pitrWindowDays),
    minimumKeep: p.minimumKeep + d.minimumKeep,
  };
}

describe('planRetention properties', () => {
  it('keeps every point of the PITR window that was restorable still restorable', () => {
    fc.assert(
      fc.property(
        historyShapeArb,
        policyArb,
        uniform(0, 1.2),
        fc.boolean(),
        (shape, policy, windowFraction, windowOnly) => {
          const h = buildHistory(shape, policy);
          // The window covers a fraction of the history (sometimes all of it and more).
          const days = (windowFraction * (h.nowMs - h.times[0]!)) / DAY;
          // A window alone deletes the most, so it is the hardest case for restorability.
          const only = { minimumKeep: 1, pitrWindowDays: days };
          const plan = planRetention({
            ...h.input,
            policy: windowOnly ? only : { ...policy, pitrWindowDays: days },
          });
          const deleted = deletedKeys(plan);
          const baseKept = (b: BaseInfo) =>
            !deleted.has(b.backup.manifestKey) && b.backup.objectKeys.every((k) => !deleted.has(k));
          const walKept = (key: string) => !deleted.has(key);
          for (const t of pointsInWindow(h, h.nowMs - days * DAY)) {
            const before = restorable(h, t, everything, everything);
            if (before && !restorable(h, t, baseKept, walKept)) {
              throw new Error(`point ${new Date(t).toISOString()} in the window is no longer restorable`);
            }
          }
        },
      ),
      { numRuns: 2 * NUM_RUNS },
    );
  });

  it('never deletes a locked key, a kept backup, or anything it was not given', () => {
    fc.assert(
      fc.property(scenarioArb, (h) => {
        const plan = planRetention(h.input);
        const locked = h.input.lockedKeys as Set<string>;
        const given = new Set([
          ...h.input.backups.flatMap((b) => [b.manifestKey, ...b.objectKeys]),
          ...h.input.walFiles.map((w) => w.key),
        ]);
        const keys = plan.deletions.map((d) => d.key);
        expect(new Set(keys).size).toBe(keys.length);
        for (const key of keys) {
          expect(locked.has(key)).toBe(false);
          expect(given.has(key)).toBe(true);
        }
        for (const decision of plan.backups) {
          const backup = h.input.backups.find((b) => b.backupId === decision.backupId)!;
          const mine = plan.deletions.filter((d) => d.backupId === backup.backupId);
          if (decision.action === 'delete') {
            // Manifest first, then every object.
            expect(mine.map((d) => d.key)).toEqual([backup.manifestKey, ...backup.objectKeys]);
          } else {
            expect(mine).toEqual([]);
          }
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('always keeps the newest verified backup and the minimum of every group, so never deletes everything', () => {
    fc.assert(
      fc.property(scenarioArb, (h) => {
        const plan = planRetention(h.input);
        const action = new Map(plan.backups.map((d) => [d.backupId, d.action]));
        // Newest first; equal stop times are ordered by backup id, newest id first, as the planner does.
        const byNewest = [...h.input.backups].sort(
          (a, b) =>
            Date.parse(b.stopTime as string) - Date.parse(a.stopTime as string) ||
            (a.backupId < b.backupId ? 1 : -1),
        );
        const groups: RetentionBackup[][] = [
          byNewest.filter((b) => b.kind === 'base'),
          byNewest.filter((b) => b.kind === 'logical' && b.databases?.includes('a')),
          byNewest.filter((b) => b.kind === 'logical' && b.databases?.includes('b')),
          byNewest.filter((b) => b.kind === 'logical' && b.databases?.length === 0),
        ];
        for (const group of groups) {
          const verified = group.find((b) => b.verified);
          if (verified) expect(action.get(verified.backupId)).toBe('keep');
          const kept = group.filter((b) => action.get(b.backupId) === 'keep').length;
          expect(kept).toBeGreaterThanOrEqual(Math.min(group.length, h.input.policy.minimumKeep));
        }
        const newestVerified = byNewest.find((b) => b.verified);
        if (newestVerified) expect(action.get(newestVerified.backupId)).toBe('keep');
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('keeps at least as much under a stronger policy', () => {
    fc.assert(
      fc.property(scenarioArb, strengtheningArb, (h, delta) => {
        const weak = deletedKeys(planRetention(h.input));
        const strong = deletedKeys(planRetention({ ...h.input, policy: strengthen(h.input.policy, delta) }));
        for (const key of strong) {
          if (!weak.has(key))
            throw new Error(`the stronger policy deletes ${key}, which the weaker one keeps`);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
