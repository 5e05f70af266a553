/**
 * The freshness function's own state per cluster in ingest (core/freshness-state.ts says what it
 * holds): read, brought up to date with what ingest holds after it, and written back when it
 * changed. A run lists `manifests/` after the state's manifest cursor, the timelines with one
 * delimiter listing of `wal/`, and each timeline's WAL after the state: a fixed number of LIST
 * requests whatever the archive holds (the first run walks the whole archive once).
 */
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import {
  advanceManifests,
  EMPTY_FRESHNESS_STATE,
  type FreshnessState,
  noteManifest,
  parseFreshnessState,
  walkTimeline,
} from '../../core/freshness-state.ts';
import { backupIdOfManifestKey, freshnessStateKey, manifestsPrefix, walPrefix } from '../../core/keys.ts';
import type { ListedKey } from '../../core/replication-cursor.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import { ObjectNotFoundError } from '../../storage/storage.ts';
import { type Location, listFrom } from '../lib/locations.ts';
import { listTimelines } from '../replication/cursors.ts';

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
    const manifest = await readManifestOrReject(ingest.storage, object.key);
    if (isStoredManifest(manifest)) next = noteManifest(next, object.key, manifest.manifest);
  }
  next = advanceManifests(next, listed, now);
  const wal = { ...next.wal };
  for (const timeline of await listTimelines(ingest, cluster)) {
    const keys: ListedKey[] = [];
    for await (const object of listFrom(ingest, walPrefix(cluster, timeline), wal[timeline]?.after))
      keys.push(object);
    wal[timeline] = walkTimeline(wal[timeline], Number.parseInt(timeline, 16), keys, now);
  }
  return { ...next, wal };
}
