/**
 * What the freshness function has seen of one cluster in ingest, so a run lists only what is new
 * (S3's StartAfter) instead of the whole archive: the manifests read (the newest dump, the oldest
 * base backup per timeline) and, per WAL timeline, how far it has walked and the gaps found on the
 * way. The pipeline stores it under `pipeline/` (core/keys.ts freshnessStateKey), where no host
 * may write. docs/architecture.md, "Freshness".
 *
 * A WAL gap is judged only between settled keys (core/replication-cursor.ts isSettled): a parallel
 * push may store segment N after N+1, so a segment missing from the unsettled tail may still come;
 * the tail is listed again by the next run. Pure: no I/O.
 */
import { z } from 'zod';
import { parseWalKey } from './keys.ts';
import type { Manifest } from './manifest.ts';
import { advanceStream, ClusterCursorSchema, isSettled, type ListedKey } from './replication-cursor.ts';
import type { VerifyReport } from './verify-report.ts';
import { gapsBetween, gapsInWindows, type TimelineSpan, type WindowStart } from './wal-gaps.ts';
import { parseWalFileName, segmentNumberOf } from './wal-names.ts';

const TIMELINE = z.string().regex(/^[0-9A-F]{8}$/);
const GapSchema = z.strictObject({
  from: z.string(),
  to: z.string(),
  missingSegments: z.number().int().positive(),
});
const TimelineStateSchema = z.strictObject({
  /** Every key up to this one has been walked, and nothing new can still arrive before it. */
  after: z.string().min(1).optional(),
  /** The first and the last segment walked (settled). */
  oldestSegment: z.string().optional(),
  lastSegment: z.string().optional(),
  /** When ingest stored the newest object seen on the timeline, settled or not (ISO). */
  newestStoredAt: z.iso.datetime().optional(),
  gaps: z.array(GapSchema).default([]),
});
export const FreshnessStateSchema = z.strictObject({
  format: z.literal('pgkeep.freshness-state.v1'),
  /** Manifests read: `after` as replication's manifest cursor, `copied` = read after it. */
  manifests: ClusterCursorSchema.shape.manifests,
  /** When ingest stored the newest manifest seen (ISO): with the WAL's, what replication's lag is judged by. */
  newestManifestStoredAt: z.iso.datetime().optional(),
  newestDump: z.strictObject({ key: z.string(), stopTime: z.iso.datetime() }).optional(),
  /** Per timeline, the oldest base backup read: where its gap window starts. */
  bases: z.record(TIMELINE, z.strictObject({ backupId: z.string(), startWalFile: z.string() })).default({}),
  wal: z.record(TIMELINE, TimelineStateSchema).default({}),
  /** Per verification source, when its newest passed report read finished (ISO). */
  verified: z.record(z.string(), z.iso.datetime()).optional(),
  /**
   * The verification reports read: a run GETs only those stored in or after `second` (LastModified
   * has whole seconds) and not among `keys` (those of that second already read). Reports are
   * written once by the pipeline's verifier and never changed.
   */
  reports: z.strictObject({ second: z.iso.datetime(), keys: z.array(z.string()) }).optional(),
});

export type FreshnessState = z.infer<typeof FreshnessStateSchema>;
export type TimelineState = z.infer<typeof TimelineStateSchema>;

export const EMPTY_FRESHNESS_STATE: FreshnessState = {
  format: 'pgkeep.freshness-state.v1',
  manifests: { copied: [] },
  bases: {},
  wal: {},
};

export function parseFreshnessState(json: string, source: string): FreshnessState {
  const parsed = FreshnessStateSchema.safeParse(JSON.parse(json));
  if (!parsed.success)
    throw new Error(
      `invalid freshness state ${source}: ${parsed.error.issues[0]?.message ?? 'wrong shape'}; delete it and the next run walks the archive again`,
    );
  return parsed.data;
}

/** The state once the validated manifest at `key` has been read. */
export function noteManifest(state: FreshnessState, key: string, manifest: Manifest): FreshnessState {
  let next = state;
  if (manifest.kind === 'logical' && (state.newestDump === undefined || key > state.newestDump.key))
    next = { ...next, newestDump: { key, stopTime: manifest.stopTime } };
  const { timeline, startWalFile } = manifest;
  if (manifest.kind === 'base' && timeline !== undefined && startWalFile !== undefined) {
    const hex = timeline.toString(16).toUpperCase().padStart(8, '0');
    const known = next.bases[hex];
    if (known === undefined || manifest.backupId < known.backupId)
      next = { ...next, bases: { ...next.bases, [hex]: { backupId: manifest.backupId, startWalFile } } };
  }
  return next;
}

/** The state once the manifests listed after its cursor (ascending) have been read. */
export function advanceManifests(
  state: FreshnessState,
  listed: readonly ListedKey[],
  now: Date,
): FreshnessState {
  let newest = state.newestManifestStoredAt;
  for (const object of listed) {
    const at = object.lastModified.toISOString();
    if (newest === undefined || at > newest) newest = at;
  }
  return {
    ...state,
    manifests: advanceStream(state.manifests, listed, now, true),
    ...(newest ? { newestManifestStoredAt: newest } : {}),
  };
}

/** Whether the report listed as `object` has yet to be read (see `reports` in the schema). */
export function isUnreadReport(state: FreshnessState, object: ListedKey): boolean {
  const second = wholeSecond(object.lastModified);
  const read = state.reports;
  return (
    read === undefined || second > read.second || (second === read.second && !read.keys.includes(object.key))
  );
}

/** The state once a valid report has been read: a passed one may be its source's newest. */
export function noteVerifyReport(state: FreshnessState, report: VerifyReport): FreshnessState {
  const known = state.verified?.[report.source];
  // As instants: the same time may be written with or without fractional seconds.
  if (!report.passed || (known !== undefined && Date.parse(known) >= Date.parse(report.finishedAt)))
    return state;
  return { ...state, verified: { ...state.verified, [report.source]: report.finishedAt } };
}

/**
 * The state once the reports listed (all of `verify/<cluster>/`) have been read. Only settled ones
 * (isSettled) move the mark: a report stored late with an earlier LastModified than one already
 * listed is still read by a later run, and the unsettled ones are read again until they settle.
 */
export function advanceReports(
  state: FreshnessState,
  listed: readonly ListedKey[],
  now: Date,
): FreshnessState {
  let read = state.reports;
  for (const object of listed) {
    if (!isSettled(object, now)) continue;
    const second = wholeSecond(object.lastModified);
    if (read === undefined || second > read.second) read = { second, keys: [object.key] };
    else if (second === read.second && !read.keys.includes(object.key))
      read = { second, keys: [...read.keys, object.key].sort() };
  }
  return read === state.reports ? state : { ...state, reports: read as NonNullable<typeof read> };
}

function wholeSecond(at: Date): string {
  return new Date(Math.floor(at.getTime() / 1000) * 1000).toISOString();
}

/**
 * When ingest stored the newest object replication copies that this state has seen: a manifest
 * (a backup's objects count from their manifest, as replication plans them) or a WAL file.
 */
export function newestStoredAt(state: FreshnessState): Date | undefined {
  const times = [state.newestManifestStoredAt, ...Object.values(state.wal).map((t) => t.newestStoredAt)];
  const newest = times
    .filter((t): t is string => t !== undefined)
    .sort()
    .at(-1);
  return newest === undefined ? undefined : new Date(newest);
}

/**
 * One timeline's state once the keys listed after its `after` (ascending) have been walked: the
 * settled ones at the start are passed, and the gaps between their segments (and the last segment
 * passed before) recorded; the rest only count for the newest storage time.
 */
export function walkTimeline(
  state: TimelineState | undefined,
  timeline: number,
  listed: readonly ListedKey[],
  now: Date,
): TimelineState {
  let newest = state?.newestStoredAt === undefined ? undefined : new Date(state.newestStoredAt);
  for (const object of listed) if (!newest || object.lastModified > newest) newest = object.lastModified;
  let settled = 0;
  while (settled < listed.length && isSettled(listed[settled] as ListedKey, now)) settled++;
  const walked = state?.lastSegment ? [state.lastSegment] : [];
  for (const object of listed.slice(0, settled)) {
    const name = parseWalFileName(parseWalKey(object.key)?.walFileName ?? '');
    // Ascending keys; a name stored twice (which wal-push refuses) counts once.
    if (name?.kind === 'segment' && name.timeline === timeline && !(name.name <= (walked.at(-1) ?? '')))
      walked.push(name.name);
  }
  const gaps = gapsBetween(
    timeline,
    walked.map((name) => segmentNumberOf(name)),
  );
  const after = advanceStream(
    state?.after ? { after: state.after, copied: [] } : undefined,
    listed.slice(0, settled),
    now,
    false,
  ).after;
  const oldestSegment = state?.oldestSegment ?? walked[0];
  const lastSegment = walked.at(-1);
  return {
    ...(after ? { after } : {}),
    ...(oldestSegment ? { oldestSegment } : {}),
    ...(lastSegment ? { lastSegment } : {}),
    ...(newest ? { newestStoredAt: newest.toISOString() } : {}),
    gaps: [...(state?.gaps ?? []), ...gaps],
  };
}

/**
 * The gaps that count (core/wal-gaps.ts gapsInWindows, as `pgkeep check --archive` counts them):
 * per timeline, those between the oldest base backup read on it and its last walked segment.
 */
export function archiveGapCount(state: FreshnessState): number {
  const spans: TimelineSpan[] = [];
  for (const [hex, t] of Object.entries(state.wal))
    if (t.oldestSegment && t.lastSegment)
      spans.push({
        timeline: Number.parseInt(hex, 16),
        oldestSegment: t.oldestSegment,
        newestSegment: t.lastSegment,
        gaps: t.gaps,
      });
  const bases: WindowStart[] = Object.entries(state.bases).map(([hex, b]) => ({
    backupId: b.backupId,
    kind: 'base',
    timeline: Number.parseInt(hex, 16),
    startWalFile: b.startWalFile,
  }));
  return gapsInWindows(spans, bases).reduce((sum, w) => sum + w.gaps.length, 0);
}
