/**
 * What the repository's WAL archive holds, per timeline: the segment range, the gaps in it, and
 * when the newest segment was stored. Read from object listings only (names, sizes, the storage's
 * own modification times); no object is opened and no key is needed.
 */
import { parseWalKey, walPrefix } from '../../core/keys.ts';
import { gapsBetween, type WalGap } from '../../core/wal-gaps.ts';
import {
  DEFAULT_WAL_SEGMENT_SIZE_BYTES,
  parseWalFileName,
  segmentNumberOf,
  walSegmentFileNameFromNumber,
} from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';

export interface TimelineArchive {
  readonly timeline: number;
  readonly segments: number;
  readonly oldestSegment: string;
  readonly newestSegment: string;
  /** When the storage received the newest segment (its clock, not the database host's). */
  readonly newestStoredAt: Date;
  /** Stored (compressed, encrypted) bytes of every WAL object of the timeline. */
  readonly storedBytes: number;
  readonly gaps: readonly WalGap[];
}

export interface WalArchive {
  readonly timelines: readonly TimelineArchive[];
  /** `.history` files, one per timeline after the first that was ever archived. */
  readonly historyFiles: readonly string[];
}

/** Lists the cluster's WAL objects; segments of a non-default size need `segmentSizeBytes`. */
export async function scanWalArchive(
  storage: Storage,
  cluster: string,
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): Promise<WalArchive> {
  const byTimeline = new Map<number, { numbers: Set<number>; newest: Date; bytes: number }>();
  const historyFiles: string[] = [];
  for await (const info of storage.list(walPrefix(cluster))) {
    const key = parseWalKey(info.key);
    const name = key && parseWalFileName(key.walFileName);
    if (!name) continue;
    if (name.kind === 'history') {
      historyFiles.push(name.name);
      continue;
    }
    const entry = byTimeline.get(name.timeline) ?? { numbers: new Set(), newest: new Date(0), bytes: 0 };
    byTimeline.set(name.timeline, entry);
    entry.bytes += info.sizeBytes;
    if (name.kind !== 'segment') continue;
    entry.numbers.add(segmentNumberOf(name.name, segmentSizeBytes));
    if (info.lastModified > entry.newest) entry.newest = info.lastModified;
  }
  const timelines: TimelineArchive[] = [];
  for (const [timeline, entry] of [...byTimeline].sort((a, b) => a[0] - b[0])) {
    const numbers = [...entry.numbers].sort((a, b) => a - b);
    const first = numbers[0];
    const last = numbers[numbers.length - 1];
    if (first === undefined || last === undefined) continue;
    const name = (n: number) => walSegmentFileNameFromNumber(timeline, n, segmentSizeBytes);
    const gaps = gapsBetween(timeline, numbers, segmentSizeBytes);
    timelines.push({
      timeline,
      segments: numbers.length,
      oldestSegment: name(first),
      newestSegment: name(last),
      newestStoredAt: entry.newest,
      storedBytes: entry.bytes,
      gaps,
    });
  }
  return { timelines, historyFiles: historyFiles.sort() };
}

/**
 * The newest point a recovery target can lie before. Every WAL record in the archive was written
 * before the storage received the segment holding it, so a target time at or after the newest
 * segment's storage time has no record after it: recovery would replay everything and stop with
 * "recovery ended before configured recovery target". (Clock skew between the database host and
 * the storage shifts this bound by the skew.)
 */
export function newestArchivedSegment(archive: WalArchive): TimelineArchive | undefined {
  return [...archive.timelines].sort((a, b) => b.newestStoredAt.getTime() - a.newestStoredAt.getTime())[0];
}
