/**
 * Reading a WAL file for a push: once, in pieces, hashing it and compressing it on the way, and
 * checking that a segment's page header agrees with its name and size.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, zstdCompressSync } from 'node:zlib';
import { type WalFileName, walSegmentFileNameFromNumber } from '../../core/wal-names.ts';
import {
  parseWalSegmentHeader,
  WAL_LONG_HEADER_BYTES,
  type WalSegmentHeader,
} from '../../core/wal-segment-header.ts';

export interface LocalFacts {
  readonly wal: WalFileName;
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly header?: WalSegmentHeader;
}

/**
 * WAL files up to this size are compressed in memory (a default 16 MiB segment compresses to
 * 0.5-2 MiB); the rare larger `wal_segment_size` (up to 1 GiB) is streamed, so memory stays bounded.
 */
export const IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024;

/** The piece a WAL file is read, hashed and compressed in: small enough to stay in the CPU's cache. */
const PIECE_BYTES = 1024 * 1024;

/** A WAL file read once: its facts, and its bytes compressed. */
export interface CompressedWal {
  readonly sha256: string;
  readonly sizeBytes: number;
  /** The first bytes, for the segment header. */
  readonly head: Buffer;
  readonly compressed: Buffer;
}

/**
 * Reads a WAL file of up to {@link IN_MEMORY_MAX_BYTES} in 1 MiB pieces through two reused buffers,
 * hashing and compressing each piece while it is in the CPU cache, each piece its own zstd frame
 * (a zstd stream is one or more frames; every decoder reads them in order), while the thread pool
 * reads the next piece into the other buffer. Undefined for a larger file. Reading the whole file
 * into one buffer and hashing it on this thread while the thread pool compressed it was slower
 * (memory bandwidth, a fresh 16 MiB of page faults per push); overlapping only the read is not
 * (docs/performance.md). The frames cost <0.5% of compression ratio.
 */
export async function readCompressed(path: string, level: number): Promise<CompressedWal | undefined> {
  const handle = await open(path, 'r');
  try {
    if ((await handle.stat()).size > IN_MEMORY_MAX_BYTES) return undefined;
    const hash = createHash('sha256');
    // Two pieces: the thread pool reads the next while this thread hashes and compresses this one.
    const pieces = [Buffer.allocUnsafe(PIECE_BYTES), Buffer.allocUnsafe(PIECE_BYTES)] as const;
    const readPiece = (n: number, position: number) => {
      const reading = handle.read(pieces[n % 2] as Buffer, 0, PIECE_BYTES, position);
      // Awaited below; a failure while this thread is compressing must not go unhandled first.
      reading.catch(() => undefined);
      return reading;
    };
    const frames: Buffer[] = [];
    const params = { [zlibConstants.ZSTD_c_compressionLevel]: level };
    let head = Buffer.alloc(0);
    let sizeBytes = 0;
    let next = readPiece(0, 0);
    for (let n = 0; ; n++) {
      const { bytesRead, buffer } = await next;
      if (bytesRead === 0) break;
      next = readPiece(n + 1, sizeBytes + bytesRead);
      const chunk = buffer.subarray(0, bytesRead);
      if (head.length < WAL_LONG_HEADER_BYTES)
        head = Buffer.concat([head, chunk.subarray(0, WAL_LONG_HEADER_BYTES - head.length)]);
      hash.update(chunk);
      frames.push(zstdCompressSync(chunk, { params }));
      sizeBytes += bytesRead;
    }
    // An empty file is still one (empty) frame: an object is never zero bytes of zstd.
    if (frames.length === 0) frames.push(zstdCompressSync(Buffer.alloc(0), { params }));
    return { sha256: hash.digest('hex'), sizeBytes, head, compressed: Buffer.concat(frames) };
  } finally {
    await handle.close();
  }
}

/** Streams the file once: its sha256, size and (for segments) the page header. */
export async function inspect(path: string, wal: WalFileName): Promise<LocalFacts> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  let head = Buffer.alloc(0);
  await pipeline(
    createReadStream(path, { highWaterMark: 1024 * 1024 }),
    async (chunks: AsyncIterable<Buffer>) => {
      for await (const chunk of chunks) {
        if (head.length < WAL_LONG_HEADER_BYTES)
          head = Buffer.concat([head, chunk.subarray(0, WAL_LONG_HEADER_BYTES)]);
        hash.update(chunk);
        sizeBytes += chunk.length;
      }
    },
  );
  return checkFacts(path, wal, hash.digest('hex'), sizeBytes, head);
}

/** The facts of a WAL file, after checking that a segment's header agrees with its name and size. */
export function checkFacts(
  path: string,
  wal: WalFileName,
  sha256: string,
  sizeBytes: number,
  head: Buffer,
): LocalFacts {
  const facts = { wal, sha256, sizeBytes };
  if (wal.kind !== 'segment' && wal.kind !== 'partial') return facts;
  const header = parseWalSegmentHeader(head, path);
  if (wal.kind === 'segment' && sizeBytes !== header.segmentSizeBytes) {
    throw new Error(
      `WAL segment ${path} is ${sizeBytes} bytes but its header says segments are ${header.segmentSizeBytes} bytes: ` +
        'the file is truncated or not a complete segment; PostgreSQL only archives complete segments',
    );
  }
  const segNo = Number(header.pageAddress / BigInt(header.segmentSizeBytes));
  const expected = walSegmentFileNameFromNumber(wal.timeline, segNo, header.segmentSizeBytes);
  if (expected !== wal.name.slice(0, 24)) {
    throw new Error(
      `WAL file ${path} holds the segment that starts at byte ${header.pageAddress} (${expected}), not ${wal.name}: ` +
        'the file was renamed or copied over; refusing to store it under the wrong name',
    );
  }
  return { ...facts, header };
}

/** sha256 and size of a file, streamed. */
export async function sha256OfFile(path: string): Promise<{ sha256: string; sizeBytes: number }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), sizeBytes };
}
