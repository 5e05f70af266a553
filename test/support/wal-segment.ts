import { randomBytes } from 'node:crypto';

export const SEGMENT_BYTES = 16 * 1024 * 1024;

/**
 * A 16 MiB WAL segment file with a valid long page header for its name (magic, timeline, address,
 * system identifier, segment and block size) and `randomBytes` bytes of random payload after it, so
 * every call gives different content under the same name.
 */
export function walSegment(name: string, systemIdentifier: bigint, randomBytesCount = 64 * 1024): Buffer {
  const b = Buffer.alloc(SEGMENT_BYTES);
  randomBytes(randomBytesCount).copy(b, 8192);
  const segNo = BigInt(`0x${name.slice(8, 16)}`) * 256n + BigInt(`0x${name.slice(16, 24)}`);
  b.writeUInt16LE(0xd110, 0);
  b.writeUInt16LE(0x0002, 2);
  b.writeUInt32LE(Number.parseInt(name.slice(0, 8), 16), 4);
  b.writeBigUInt64LE(segNo * BigInt(SEGMENT_BYTES), 8);
  b.writeBigUInt64LE(systemIdentifier, 24);
  b.writeUInt32LE(SEGMENT_BYTES, 32);
  b.writeUInt32LE(8192, 36);
  return b;
}
