/**
 * PostgreSQL WAL file names and the arithmetic on them. Pure: no I/O.
 *
 *   000000010000000A000000FF                 segment: timeline, log id, segment id (8 hex digits each)
 *   000000010000000A000000FF.partial         the last, incomplete segment of a timeline left by a promotion
 *   00000002.history                         timeline history: where timeline 2 branched off its parent
 *   000000010000000A000000FF.00000028.backup backup history file: written by pg_backup_stop
 *
 * A "log id" spans 4 GiB of WAL, so with the default 16 MiB segments there are 256 segments per log
 * id (segment ids 00-FF). Timelines are hexadecimal: timeline 10 is `0000000A`.
 */

/** PostgreSQL's default `wal_segment_size`. */
export const DEFAULT_WAL_SEGMENT_SIZE_BYTES = 16 * 1024 * 1024;

const LOG_ID_SPAN_BYTES = 0x1_0000_0000;
const MIN_SEGMENT_SIZE_BYTES = 1024 * 1024;
const MAX_SEGMENT_SIZE_BYTES = 1024 * 1024 * 1024;

export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup-history';

/** A parsed WAL file name. `logId` and `segmentId` are absent only for `.history` files. */
export interface WalFileName {
  readonly name: string;
  readonly kind: WalFileKind;
  readonly timeline: number;
  /** The timeline as PostgreSQL writes it: 8 upper-case hex digits. */
  readonly timelineHex: string;
  readonly logId?: number;
  readonly segmentId?: number;
  /**
   * The 16 hex digits of log id and segment id (`0000000A000000FF`): comparing two of these as
   * strings orders segments by position in the WAL stream whatever the segment size.
   */
  readonly position?: string;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$/;
const BACKUP_HISTORY = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;

/** Throws unless `bytes` is a `wal_segment_size` PostgreSQL accepts (a power of two from 1 MiB to 1 GiB). */
export function assertWalSegmentSize(bytes: number): void {
  const powerOfTwo = Number.isInteger(bytes) && bytes > 0 && (bytes & (bytes - 1)) === 0;
  if (!powerOfTwo || bytes < MIN_SEGMENT_SIZE_BYTES || bytes > MAX_SEGMENT_SIZE_BYTES) {
    throw new Error(
      `invalid WAL segment size ${bytes} bytes: use a power of two from 1 MiB to 1 GiB (PostgreSQL's default is 16 MiB)`,
    );
  }
}

/** How many segments one log id holds: 256 for 16 MiB segments. */
export function segmentsPerLogId(segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES): number {
  assertWalSegmentSize(segmentSizeBytes);
  return LOG_ID_SPAN_BYTES / segmentSizeBytes;
}

/** A timeline as 8 upper-case hex digits (10 -> `0000000A`). */
export function timelineHex(timeline: number): string {
  if (!Number.isInteger(timeline) || timeline < 1 || timeline > 0xffffffff) {
    throw new Error(`invalid timeline ${timeline}: expected an integer from 1 to 4294967295`);
  }
  return timeline.toString(16).toUpperCase().padStart(8, '0');
}

function hex8(value: number, what: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Error(`invalid ${what} ${value}: expected an integer from 0 to 4294967295`);
  }
  return value.toString(16).toUpperCase().padStart(8, '0');
}

/** Parses any WAL file name PostgreSQL archives; `undefined` for anything else (lower-case hex included). */
export function parseWalFileName(name: string): WalFileName | undefined {
  const history = HISTORY.exec(name);
  if (history?.[1]) {
    const timeline = Number.parseInt(history[1], 16);
    return timeline === 0 ? undefined : { name, kind: 'history', timeline, timelineHex: history[1] };
  }
  const kinds: [RegExp, WalFileKind][] = [
    [SEGMENT, 'segment'],
    [PARTIAL, 'partial'],
    [BACKUP_HISTORY, 'backup-history'],
  ];
  for (const [pattern, kind] of kinds) {
    const m = pattern.exec(name);
    if (m?.[1] && m[2] && m[3]) {
      const timeline = Number.parseInt(m[1], 16);
      if (timeline === 0) return undefined;
      return {
        name,
        kind,
        timeline,
        timelineHex: m[1],
        logId: Number.parseInt(m[2], 16),
        segmentId: Number.parseInt(m[3], 16),
        position: `${m[2]}${m[3]}`,
      };
    }
  }
  return undefined;
}

/** Like {@link parseWalFileName} but throws, naming the value, when `name` is not a WAL file name. */
export function mustParseWalFileName(name: string): WalFileName {
  const parsed = parseWalFileName(name);
  if (!parsed) {
    throw new Error(
      `invalid WAL file name "${name}": expected a segment such as 000000010000000000000003, ` +
        'optionally with .partial, a 00000002.history file, or a <segment>.00000028.backup file',
    );
  }
  return parsed;
}

/** The name of the segment with the given timeline, log id and segment id. */
export function walSegmentFileName(timeline: number, logId: number, segmentId: number): string {
  return `${timelineHex(timeline)}${hex8(logId, 'log id')}${hex8(segmentId, 'segment id')}`;
}

/** The history file of `timeline` (`00000002.history`). */
export function historyFileName(timeline: number): string {
  return `${timelineHex(timeline)}.history`;
}

/** A segment's absolute number in the WAL stream: `logId * segmentsPerLogId + segmentId`. */
export function segmentNumber(
  logId: number,
  segmentId: number,
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): number {
  const perLog = segmentsPerLogId(segmentSizeBytes);
  if (!Number.isInteger(segmentId) || segmentId < 0 || segmentId >= perLog) {
    throw new Error(
      `invalid segment id ${segmentId} for ${segmentSizeBytes}-byte segments: expected 0 to ${perLog - 1}; ` +
        "check the cluster's wal_segment_size",
    );
  }
  return logId * perLog + segmentId;
}

/** The segment number of a segment, `.partial` or backup history file name. */
export function segmentNumberOf(
  name: string,
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): number {
  const parsed = mustParseWalFileName(name);
  if (parsed.logId === undefined || parsed.segmentId === undefined) {
    throw new Error(`WAL file "${name}" is a history file and has no segment number`);
  }
  return segmentNumber(parsed.logId, parsed.segmentId, segmentSizeBytes);
}

/** The segment name for an absolute segment number on `timeline`. */
export function walSegmentFileNameFromNumber(
  timeline: number,
  segNo: number,
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): string {
  const perLog = segmentsPerLogId(segmentSizeBytes);
  if (!Number.isSafeInteger(segNo) || segNo < 0) {
    throw new Error(`invalid segment number ${segNo}: expected a non-negative integer`);
  }
  return walSegmentFileName(timeline, Math.floor(segNo / perLog), segNo % perLog);
}

/** The segment after `name` on the same timeline (…000000FF is followed by the next log id's …00000000). */
export function nextWalSegmentFileName(
  name: string,
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): string {
  const parsed = mustParseWalFileName(name);
  if (parsed.kind !== 'segment' && parsed.kind !== 'partial') {
    throw new Error(`WAL file "${name}" is not a segment; only segments have a next segment`);
  }
  return walSegmentFileNameFromNumber(
    parsed.timeline,
    segmentNumberOf(parsed.name, segmentSizeBytes) + 1,
    segmentSizeBytes,
  );
}

/** Parses an LSN such as `16/B374D848` into a byte position. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  if (!m?.[1] || !m[2]) throw new Error(`invalid LSN "${lsn}": expected the form 16/B374D848`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** The segment that holds the WAL byte at `lsn` on `timeline` (the file name `pg_walfile_name_offset` gives;
 * `pg_walfile_name` instead names the segment holding the byte before `lsn`). */
export function walFileNameForLsn(
  timeline: number,
  lsn: string,
  segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE_BYTES,
): string {
  const perLog = BigInt(segmentsPerLogId(segmentSizeBytes));
  const segNo = parseLsn(lsn) / BigInt(segmentSizeBytes);
  return walSegmentFileName(timeline, Number(segNo / perLog), Number(segNo % perLog));
}

/**
 * Orders two WAL files by their position in the WAL stream, ignoring the timeline (-1, 0, 1).
 * Throws for history files, which have no position.
 */
export function compareWalPositions(a: string, b: string): number {
  const pa = mustParseWalFileName(a).position;
  const pb = mustParseWalFileName(b).position;
  if (pa === undefined || pb === undefined) {
    throw new Error(`cannot order "${a}" and "${b}": history files have no position in the WAL stream`);
  }
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}
