/**
 * The freshness function's own state per cluster in ingest (core/freshness-state.ts says what it
 * holds): read, brought up to date with what ingest holds after it, and written back when it
 * changed. A run lists `manifests/` after the state's manifest cursor, `wal/` once after the newest
 * timeline's cursor, and `verify/<cluster>/`, GETting only the reports not read yet: a fixed number
 * of requests whatever the archive holds (the first run walks the whole archive once).
 */
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import {
  advanceManifests,
  advanceReports,
  EMPTY_FRESHNESS_STATE,
  type FreshnessState,
  isUnreadReport,
  noteManifest,
  noteVerifyReport,
  parseFreshnessState,
  walkTimeline,
} from '../../core/freshness-state.ts';
import {
  backupIdOfManifestKey,
  freshnessStateKey,
  manifestsPrefix,
  verifyReportPrefix,
  walPrefix,
} from '../../core/keys.ts';
import { type ListedKey, SETTLE_MS } from '../../core/replication-cursor.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import { ObjectNotFoundError } from '../../storage/storage.ts';
import { readVerifyReport } from '../../storage/verify-reports.ts';
import { type Location, listFrom } from '../lib/locations.ts';

/** The cluster's state and its text as read (to tell whether it changed), or the empty state. */
export async function readFreshnessState(
  ingest: Location,
  cluster: string,
): Promise<{ state: FreshnessState; json?: string }> {
  const key = freshnessStateKey(cluster);
  try {
    const json = await text(await ingest.storage.get(key));
    return { state: parseFreshnessState(json, key), json };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return { state: EMPTY_FRESHNESS_STATE };
    throw error;
  }
}

/** Stores `state` unless it is what was read (`json`): a run that found nothing new writes nothing. */
export async function writeFreshnessState(
  ingest: Location,
  cluster: string,
  state: FreshnessState,
  json: string | undefined,
): Promise<void> {
  const next = JSON.stringify(state);
  if (next !== json) await ingest.storage.put(freshnessStateKey(cluster), Readable.from([next]));
}

/** `state` once what ingest holds after it has been read (new manifests) and walked (new WAL). */
export async function updateFreshnessState(
  ingest: Location,
  cluster: string,
  state: FreshnessState,
  now: Date,
): Promise<FreshnessState> {
  let next = state;
  const read = new Set(state.manifests.copied);
  const listed: ListedKey[] = [];
  for await (const object of listFrom(ingest, manifestsPrefix(cluster), state.manifests.after)) {
    if (backupIdOfManifestKey(object.key) === undefined) continue;
    listed.push(object);
    if (read.has(object.key)) continue;
    // A manifest that fails validation proves nothing (retention and replication report it).
    const manifest = await readManifestOrReject(ingest.storage, object.key, object);
    if (isStoredManifest(manifest)) next = noteManifest(next, object.key, manifest.manifest);
  }
  next = advanceManifests(next, listed, now);
  return { ...next, wal: await walkWal(ingest, cluster, next.wal, now) };
}

/** How long after a timeline last stored WAL it is listed again, for its last segments to settle. */
const OPEN_MS = 2 * SETTLE_MS;

/**
 * The timelines' states once the WAL after them has been walked: one listing of the whole `wal/`
 * prefix. Keys sort by timeline, so a listing after one timeline's cursor also finds every newer
 * timeline. It starts after the cursor of the oldest timeline that stored anything in the last
 * {@link OPEN_MS} (its last segments may not have settled when the next timeline began), else
 * after the newest timeline's: a timeline that stored nothing for that long is not listed again,
 * and a segment stored on it later still is not seen (its gaps stay as last judged).
 */
async function walkWal(
  ingest: Location,
  cluster: string,
  timelines: FreshnessState['wal'],
  now: Date,
): Promise<FreshnessState['wal']> {
  const prefix = walPrefix(cluster);
  const known = Object.keys(timelines).sort();
  const open = known.find((t) => {
    const stored = timelines[t]?.newestStoredAt;
    return stored !== undefined && now.getTime() - Date.parse(stored) < OPEN_MS;
  });
  const first = open ?? known.at(-1);
  const startAfter = first === undefined ? undefined : (timelines[first]?.after ?? walPrefix(cluster, first));
  const byTimeline = new Map<string, ListedKey[]>();
  for (const timeline of known.filter((t) => first !== undefined && t >= first)) byTimeline.set(timeline, []);
  for await (const object of listFrom(ingest, prefix, startAfter)) {
    // As a delimiter listing of timelines would: only `wal/<8 hex digits>/` holds a timeline's WAL
    // (its segments, `.history` and `.partial` files, which walkTimeline tells apart).
    const timeline = /^([0-9A-F]{8})\//.exec(object.key.slice(prefix.length))?.[1];
    if (timeline === undefined) continue;
    // A newer timeline's keys its own cursor has passed, listed again from an older one's.
    const after = timelines[timeline]?.after;
    if (after !== undefined && object.key <= after) continue;
    const keys = byTimeline.get(timeline) ?? [];
    keys.push(object);
    byTimeline.set(timeline, keys);
  }
  const wal = { ...timelines };
  for (const [timeline, keys] of byTimeline)
    wal[timeline] = walkTimeline(wal[timeline], Number.parseInt(timeline, 16), keys, now);
  return wal;
}

/**
 * `state` once the verification reports it has not read yet are read: one listing of
 * `verify/<cluster>/` (which no host may write) and a GET only for a report stored since the last
 * run, so the cost does not grow with the reports kept.
 */
export async function updateVerifiedState(
  ingest: Location,
  cluster: string,
  state: FreshnessState,
  now: Date,
): Promise<FreshnessState> {
  let next = state;
  const listed: ListedKey[] = [];
  for await (const object of ingest.storage.list(verifyReportPrefix(cluster))) {
    listed.push(object);
    if (!isUnreadReport(state, object)) continue;
    const report = await readVerifyReport(ingest.storage, cluster, object.key);
    if (report) next = noteVerifyReport(next, report);
  }
  return advanceReports(next, listed, now);
}
