/**
 * The stretch of archived WAL a point-in-time verification needs: which segments the repository
 * holds on a timeline, the first one missing from a run that should be contiguous, a reproducible
 * random target inside the window the archive covers, and fetching the segments into the scratch
 * directory before the server starts (so the restored server never holds the verifier's
 * credentials or identities).
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { parseWalKey, walPrefix } from '../../core/keys.ts';
import type { Manifest } from '../../core/manifest.ts';
import {
  DEFAULT_WAL_SEGMENT_SIZE_BYTES,
  historyFileName,
  parseLsn,
  parseWalFileName,
  segmentNumberOf,
  timelineHex,
  walFileNameForLsn,
  walSegmentFileNameFromNumber,
} from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';
import { fetchWalFile } from '../wal/fetch.ts';

/** Segment numbers the repository holds on `timeline`. */
export async function archivedSegments(
  storage: Storage,
  cluster: string,
  timeline: number,
): Promise<Set<number>> {
  const numbers = new Set<number>();
  for await (const info of storage.list(walPrefix(cluster, timelineHex(timeline)))) {
    const name = parseWalKey(info.key)?.walFileName;
    if (name && parseWalFileName(name)?.kind === 'segment') numbers.add(segmentNumberOf(name));
  }
  return numbers;
}

export function formatLsn(position: bigint): string {
  return `${(position >> 32n).toString(16).toUpperCase()}/${(position & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** The run of segments from `first` to `last` (inclusive) and the first of them the archive lacks. */
export interface SegmentRun {
  readonly names: string[];
  readonly firstMissing: string | undefined;
}

export function segmentRun(timeline: number, first: number, last: number, archived: Set<number>): SegmentRun {
  const names: string[] = [];
  let firstMissing: string | undefined;
  for (let n = first; n <= last; n++) {
    const name = walSegmentFileNameFromNumber(timeline, n);
    names.push(name);
    if (firstMissing === undefined && !archived.has(n)) firstMissing = name;
  }
  return { names, firstMissing };
}

/** The newest archived segment number, or undefined with none. */
export function newestSegment(archived: Set<number>): number | undefined {
  let newest: number | undefined;
  for (const n of archived) if (newest === undefined || n > newest) newest = n;
  return newest;
}

/** A number in [0, 1) derived from the run id, so a run's random choice can be reproduced. */
export function seededFraction(runId: string): number {
  const digest = createHash('sha256').update(`pgkeep verify ${runId}`).digest();
  return digest.readUInt32BE(0) / 2 ** 32;
}

/**
 * A target LSN inside the window the archive covers on the newest base backup's timeline: from
 * the oldest base backup's end (the first consistent point) to the start of the newest archived
 * segment (a record starts there, so recovery can reach it).
 */
export function defaultTargetLsn(bases: readonly Manifest[], archived: Set<number>, runId: string): string {
  const lower = bases.reduce<bigint | undefined>((min, m) => {
    if (!m.stopLsn) return min;
    const lsn = parseLsn(m.stopLsn);
    return min === undefined || lsn < min ? lsn : min;
  }, undefined);
  if (lower === undefined) throw new Error('no base backup with a stop LSN: take a base backup first');
  const newest = newestSegment(archived);
  const upper = newest === undefined ? lower : BigInt(newest) * BigInt(DEFAULT_WAL_SEGMENT_SIZE_BYTES);
  if (upper <= lower) return formatLsn(lower);
  const span = upper - lower;
  const offset = (span * BigInt(Math.floor(seededFraction(runId) * 1_000_000))) / 1_000_000n;
  return formatLsn(lower + offset);
}

/** The segment holding `lsn` on `timeline`, as a number. */
export function segmentOfLsn(timeline: number, lsn: string): number {
  return segmentNumberOf(walFileNameForLsn(timeline, lsn));
}

/**
 * Fetches `names` (those archived) and the timeline's history file into `dir`, verified and
 * decrypted with every check of wal-fetch; a few at a time.
 */
export async function fetchSegments(options: {
  storage: Storage;
  cluster: string;
  identities: readonly string[];
  timeline: number;
  names: readonly string[];
  dir: string;
  signal?: AbortSignal;
}): Promise<number> {
  const queue = [...options.names];
  if (options.timeline > 1) queue.unshift(historyFileName(options.timeline));
  let fetched = 0;
  const worker = async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const outcome = await fetchWalFile({
        storage: options.storage,
        cluster: options.cluster,
        identities: options.identities,
        walFileName: name,
        destination: join(options.dir, name),
        durable: false,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      if (outcome === 'fetched') fetched++;
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return fetched;
}
