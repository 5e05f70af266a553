/**
 * How an object is cut into parts for a copy: S3's limits and a deterministic plan that every step
 * of a spread-out copy can recompute from the plain-JSON {@link CopyState}.
 */
import { assertPositiveInteger } from '../../core/run-pool.ts';
import type { RetryPolicy } from '../../storage/failure.ts';
import { MAX_PART_SIZE_BYTES, MAX_PARTS, MIN_PART_SIZE_BYTES } from '../../storage/s3-options.ts';

export { MAX_PART_SIZE_BYTES, MIN_PART_SIZE_BYTES } from '../../storage/s3-options.ts';

const MIB = 1024 * 1024;
export const DEFAULT_COPY_PART_SIZE_BYTES = 16 * MIB;
export const DEFAULT_COPY_CONCURRENCY = 4;
/** What copyObject may hold of parts that arrive ahead of the one being hashed. */
export const DEFAULT_HASH_BUFFER_BYTES = 32 * MIB;
/** Attempts per part (a fresh ranged GET each time) in copyParts. */
export const DEFAULT_PART_ATTEMPTS = 3;

/**
 * How a failed part (or a whole small object) is tried again: with a fresh ranged GET, since the
 * SDK cannot retry a request whose body is a stream it has consumed.
 */
export function partRetryPolicy(attempts: number = DEFAULT_PART_ATTEMPTS): RetryPolicy {
  return {
    maxAttempts: attempts,
    initialDelayMs: 400,
    maxDelayMs: 10_000,
    deadlineMs: Number.POSITIVE_INFINITY,
  };
}

export interface CopyPart {
  /** 1-based, as in UploadPart. */
  readonly partNumber: number;
  /** First byte, inclusive. */
  readonly start: number;
  /** Last byte, inclusive. */
  readonly end: number;
}

export interface CopyPlan {
  readonly sizeBytes: number;
  /** The requested part size, raised when the object would otherwise need more than 10,000 parts. */
  readonly partSizeBytes: number;
  /** False when one PutObject does (at most one part); then `parts` has at most one entry. */
  readonly multipart: boolean;
  readonly parts: readonly CopyPart[];
}

/** Everything the steps of a spread-out copy share: plain JSON, small enough for a state machine payload. */
export interface CopyState {
  readonly sizeBytes: number;
  readonly partSizeBytes: number;
  readonly partCount: number;
  readonly uploadId: string;
  /** The source's ETag when the copy started: later ranged GETs send If-Match so a changed source fails loudly. */
  readonly sourceETag?: string;
}

export interface CompletedPart {
  readonly partNumber: number;
  readonly etag: string;
  readonly sizeBytes: number;
}

/**
 * Splits an object of `sizeBytes` into parts of `partSizeBytes` (the last one shorter). The part
 * size is raised to whole MiB when the object would need more than {@link MAX_PARTS} parts.
 * Deterministic: every step of a spread-out copy can recompute it from the {@link CopyState}.
 */
export function planCopy(sizeBytes: number, partSizeBytes: number = DEFAULT_COPY_PART_SIZE_BYTES): CopyPlan {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
    throw new RangeError(`invalid object size ${sizeBytes}: expected a whole number of bytes`);
  }
  if (
    !Number.isSafeInteger(partSizeBytes) ||
    partSizeBytes < MIN_PART_SIZE_BYTES ||
    partSizeBytes > MAX_PART_SIZE_BYTES
  ) {
    throw new RangeError(
      `invalid part size ${partSizeBytes} bytes: S3 takes parts from ${MIN_PART_SIZE_BYTES} (5 MiB) to ${MAX_PART_SIZE_BYTES} (5 GiB)`,
    );
  }
  let size = partSizeBytes;
  if (Math.ceil(sizeBytes / size) > MAX_PARTS) size = Math.ceil(sizeBytes / MAX_PARTS / MIB) * MIB;
  if (size > MAX_PART_SIZE_BYTES) {
    throw new RangeError(
      `object of ${sizeBytes} bytes is larger than S3 can store (${MAX_PARTS} parts of at most 5 GiB)`,
    );
  }
  const parts: CopyPart[] = [];
  for (let start = 0, partNumber = 1; start < sizeBytes; start += size, partNumber++) {
    parts.push({ partNumber, start, end: Math.min(start + size, sizeBytes) - 1 });
  }
  return { sizeBytes, partSizeBytes: size, multipart: parts.length > 1, parts };
}

/** The part numbers of `state` (or a plan) in batches of `partsPerBatch`: the items of a Map over copyParts. */
export function partNumberBatches(state: { readonly partCount: number }, partsPerBatch: number): number[][] {
  assertPositiveInteger(partsPerBatch, 'batch size', 'use at least 1 part per batch');
  const batches: number[][] = [];
  for (let first = 1; first <= state.partCount; first += partsPerBatch) {
    const last = Math.min(first + partsPerBatch - 1, state.partCount);
    batches.push(Array.from({ length: last - first + 1 }, (_, i) => first + i));
  }
  return batches;
}
