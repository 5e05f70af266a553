/**
 * The long page header at the start of every WAL segment (PostgreSQL's XLogLongPageHeaderData,
 * src/include/access/xlog_internal.h). It names the cluster that wrote the segment (the system
 * identifier, the same as pg_control's), the timeline, the segment's own position and the segment
 * size. wal-push reads it to refuse WAL of another cluster and to catch a file whose content does
 * not belong under its name. Pure: no I/O.
 *
 *   offset  0  uint16 xlp_magic       format version (0xD110 = PostgreSQL 15)
 *   offset  2  uint16 xlp_info        flag bits; XLP_LONG_HEADER (0x0002) on a segment's first page
 *   offset  4  uint32 xlp_tli         timeline of the first record on the page
 *   offset  8  uint64 xlp_pageaddr    LSN of the page itself = the segment's start
 *   offset 16  uint32 xlp_rem_len     continuation length
 *   offset 24  uint64 xlp_sysid       system identifier
 *   offset 32  uint32 xlp_seg_size    wal_segment_size
 *   offset 36  uint32 xlp_xlog_blcksz wal_block_size
 *
 * Integers are in the byte order of the machine that wrote them; every platform PostgreSQL is
 * built for in practice is little-endian, and a big-endian segment fails the magic check loudly.
 */

/** Bytes needed to parse the header. */
export const WAL_LONG_HEADER_BYTES = 40;

const XLP_LONG_HEADER = 0x0002;

/** WAL page magic numbers per PostgreSQL major version (XLOG_PAGE_MAGIC). */
export const WAL_PAGE_MAGIC_BY_VERSION: Readonly<Record<number, number>> = {
  10: 0xd097,
  11: 0xd098,
  12: 0xd101,
  13: 0xd106,
  14: 0xd10d,
  15: 0xd110,
  16: 0xd113,
  17: 0xd116,
  18: 0xd118,
};

export interface WalSegmentHeader {
  readonly magic: number;
  /** The PostgreSQL major version the magic belongs to, when known. */
  readonly pgMajorVersion?: number;
  readonly timeline: number;
  /** The LSN the segment starts at, as a byte position. */
  readonly pageAddress: bigint;
  /** The system identifier, a 64-bit integer as a decimal string (as pg_controldata prints it). */
  readonly systemIdentifier: string;
  readonly segmentSizeBytes: number;
  readonly blockSizeBytes: number;
}

export class InvalidWalSegmentError extends Error {
  override name = 'InvalidWalSegmentError';
}

/**
 * Parses the long page header from the first bytes of a segment (or `.partial` segment). `source`
 * names the file in errors.
 */
export function parseWalSegmentHeader(bytes: Uint8Array, source: string): WalSegmentHeader {
  if (bytes.length < WAL_LONG_HEADER_BYTES) {
    throw new InvalidWalSegmentError(
      `WAL segment ${source} is too short (${bytes.length} bytes) to hold a page header; is it a WAL segment?`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint16(0, true);
  const pgMajorVersion = Object.entries(WAL_PAGE_MAGIC_BY_VERSION).find(([, m]) => m === magic)?.[0];
  // Magic numbers of versions not in the table still look like 0xD0xx/0xD1xx.
  if ((magic & 0xfe00) !== 0xd000) {
    throw new InvalidWalSegmentError(
      `WAL segment ${source} has no WAL page magic (found 0x${magic.toString(16)}): it is not a PostgreSQL WAL segment`,
    );
  }
  const info = view.getUint16(2, true);
  if ((info & XLP_LONG_HEADER) === 0) {
    throw new InvalidWalSegmentError(
      `WAL segment ${source} does not start with a long page header: the file is not the start of a segment`,
    );
  }
  const header: WalSegmentHeader = {
    magic,
    timeline: view.getUint32(4, true),
    pageAddress: view.getBigUint64(8, true),
    systemIdentifier: view.getBigUint64(24, true).toString(),
    segmentSizeBytes: view.getUint32(32, true),
    blockSizeBytes: view.getUint32(36, true),
  };
  return pgMajorVersion === undefined ? header : { ...header, pgMajorVersion: Number(pgMajorVersion) };
}

/** The system identifier in pg_control (`global/pg_control`), which starts with it. */
export function parsePgControlSystemIdentifier(bytes: Uint8Array, source: string): string {
  if (bytes.length < 8) throw new InvalidWalSegmentError(`${source} is too short to be pg_control`);
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true).toString();
}
