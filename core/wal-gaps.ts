/**
 * What a gap in a WAL archive is, and which gaps count: the one definition that `pgkeep check
 * --archive`, `pgkeep info` (agent/physical/wal-archive.ts) and the freshness function's
 * ArchiveGaps metric (lambdas/freshness/) share. Pure: segment numbers in, gaps out.
 */
import { DEFAULT_WAL_SEGMENT_SIZE_BYTES, walSegmentFileNameFromNumber } from './wal-names.ts';

export interface WalGap {
  /** The first missing segment. */
  readonly from: string;
  /** The last missing segment. */
  readonly to: string;
  readonly missingSegments: number;
}

/**
 * The runs of segments missing between consecutive `numbers` (segment numbers of one timeline,
 * ascending and unique, as core/wal-names.ts segmentNumberOf counts them).
 */
export function gapsBetween(
  timeline: number,
  numbers: readonly number[],
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): WalGap[] {
  const name = (n: number) => walSegmentFileNameFromNumber(timeline, n, segmentSizeBytes);
  const gaps: WalGap[] = [];
  for (let i = 1; i < numbers.length; i++) {
    const prev = numbers[i - 1] as number;
    const next = numbers[i] as number;
    if (next - prev > 1)
      gaps.push({ from: name(prev + 1), to: name(next - 1), missingSegments: next - prev - 1 });
  }
  return gaps;
}

/** What the window of one timeline needs to know of its archived segments. */
export interface TimelineSpan {
  readonly timeline: number;
  readonly oldestSegment: string;
  readonly newestSegment: string;
  /** Every gap between the oldest and the newest segment, ascending. */
  readonly gaps: readonly WalGap[];
}

/** A base backup as far as the archive window is concerned. */
export interface WindowStart {
  readonly backupId: string;
  readonly kind: string;
  readonly timeline?: number;
  readonly startWalFile?: string;
}

/** The gaps of one timeline that a recovery from its oldest base backup would run into. */
export interface TimelineWindowGaps {
  readonly timeline: number;
  /** The oldest base backup on the timeline, where the window starts; absent when there is none. */
  readonly baseBackupId?: string;
  /** The first segment of the window: the base backup's start segment, else the oldest stored. */
  readonly from: string;
  readonly to: string;
  readonly gaps: readonly WalGap[];
}

/**
 * Every gap per timeline between the oldest base backup on it (listed oldest first in `bases`)
 * and its newest segment; a timeline without a base backup is checked over all its segments,
 * since a recovery from an older timeline's backup replays it too.
 */
export function gapsInWindows(
  timelines: readonly TimelineSpan[],
  bases: readonly WindowStart[],
): TimelineWindowGaps[] {
  return timelines.map((t) => {
    const base = bases.find((b) => b.kind === 'base' && b.timeline === t.timeline);
    const start = base?.startWalFile;
    const from = start !== undefined && start.slice(8) > t.oldestSegment.slice(8) ? start : t.oldestSegment;
    return {
      timeline: t.timeline,
      ...(base ? { baseBackupId: base.backupId } : {}),
      from,
      to: t.newestSegment,
      gaps: t.gaps.filter((g) => g.to.slice(8) >= from.slice(8)),
    };
  });
}
