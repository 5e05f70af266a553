/**
 * Streaming copy of one object between two S3-compatible endpoints: two clients, possibly two
 * providers, so no server-side CopyObject. Bytes flow from ranged GETs on the source straight
 * into PutObject or UploadPart on the target; nothing is written to disk.
 *
 * - An object of at most one part: one GET piped into one PutObject with its ContentLength.
 * - Larger: CreateMultipartUpload on the target, then per part a ranged GET piped into
 *   UploadPart, then CompleteMultipartUpload; any failure aborts the upload.
 *
 * Memory: a part is streamed, never buffered, so {@link copyParts} holds only socket buffers
 * whatever the part size. {@link copyObject} also hashes the bytes in order (sha256, so the caller
 * can check the manifest without reading the copy again); a part that arrives ahead of the one
 * being hashed is kept until its turn, and only as many parts run ahead as fit in
 * `hashBufferBytes` (32 MiB by default), so that is all it holds, whatever the object or part
 * size. Parts too large for that run one at a time: use the spread-out steps for such objects.
 *
 * When one invocation's 15 minutes would not do, the same steps run spread out: {@link planCopy}
 * and {@link startCopy} once, {@link copyParts} for batches of part numbers (a Step Functions
 * Map, each item one Lambda), {@link completeCopy} with all their results, {@link abortCopy} on
 * failure. Every value passed between them is plain JSON.
 *
 * With `expected` (the manifest's size and sha256), {@link copyObject} never makes a wrong copy
 * visible: a multipart upload is aborted instead of completed, and a single PutObject holds back
 * its last bytes until the hash matched, so the request fails incomplete.
 */
import { createHash } from 'node:crypto';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import {
  type ExpectedObject,
  isNotFound,
  type SdkError,
  type VerifyCopyResult,
  verifyCopy,
} from './verify-copy.ts';

const MIB = 1024 * 1024;
/** S3's smallest part (every part but the last). */
export const MIN_PART_SIZE_BYTES = 5 * MIB;
/** S3's largest part. */
export const MAX_PART_SIZE_BYTES = 5 * 1024 * MIB;
/** S3's limit on parts per multipart upload. */
export const MAX_PART_COUNT = 10_000;
export const DEFAULT_COPY_PART_SIZE_BYTES = 16 * MIB;
export const DEFAULT_COPY_CONCURRENCY = 4;
/** What {@link copyObject} may hold of parts that arrive ahead of the one being hashed. */
export const DEFAULT_HASH_BUFFER_BYTES = 32 * MIB;
/** Attempts per part (a fresh ranged GET each time) in {@link copyParts}. */
export const DEFAULT_PART_ATTEMPTS = 3;

/** One object at one endpoint. `key` is the full key in the bucket (any storage prefix included). */
export interface S3ObjectRef {
  readonly client: S3Client;
  readonly bucket: string;
  readonly key: string;
}

/** The object `key` of a repository driver (storage/s3-storage.ts `S3Storage`), which maps keys under its prefix. */
export function objectIn(
  storage: { readonly client: S3Client; readonly bucket: string; readonly prefix: string },
  key: string,
): S3ObjectRef {
  return { client: storage.client, bucket: storage.bucket, key: `${storage.prefix}${key}` };
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

export interface CopyOptions {
  /** @default DEFAULT_COPY_PART_SIZE_BYTES (16 MiB) */
  readonly partSizeBytes?: number;
  /** Parts copied at once. @default DEFAULT_COPY_CONCURRENCY (4) */
  readonly concurrency?: number;
  /**
   * {@link copyObject} only: bytes it may hold of parts that finished ahead of the one being
   * hashed; fewer parts run at once when `concurrency - 1` parts would not fit.
   * @default DEFAULT_HASH_BUFFER_BYTES (32 MiB)
   */
  readonly hashBufferBytes?: number;
  /** The source's size, when the caller knows it already (saves nothing but a HEAD when absent). */
  readonly sizeBytes?: number;
  /** Size and sha256 (hex) the bytes must have, e.g. from the manifest; a mismatch leaves nothing at the target. */
  readonly expected?: { readonly sizeBytes: number; readonly sha256: string };
  /** Stops the copy (and aborts its multipart upload). */
  readonly signal?: AbortSignal;
  /** Called after each part has landed at the target. */
  readonly onPart?: (part: CompletedPart) => void;
}

export interface CopyResult {
  readonly sizeBytes: number;
  /** sha256 (hex) of the bytes copied, computed as they streamed past. */
  readonly sha256: string;
  readonly multipart: boolean;
  readonly partCount: number;
  /** The target's ETag of the new object. */
  readonly etag?: string;
}

/** A copy did not match what it was expected to be; nothing was left at the target. */
export class CopyIntegrityError extends Error {
  override name = 'CopyIntegrityError';
}

/** The source object changed or disappeared while it was being copied. */
export class SourceChangedError extends Error {
  override name = 'SourceChangedError';
}

/**
 * The target already holds other bytes at the key: the source changed after it was copied (a host
 * overwrote what it had pushed) or the copy was damaged. The copy is never replaced, so the first
 * version stays where the host cannot reach it; the run reports the key as a trust violation.
 */
export class TargetConflictError extends Error {
  override name = 'TargetConflictError';
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.key = key;
  }
}

/** Throws {@link TargetConflictError} unless `before` (the target's copy checked against `expected`) is ok or missing. */
export function refuseReplacing(
  target: S3ObjectRef,
  before: VerifyCopyResult,
): asserts before is Extract<VerifyCopyResult, { status: 'ok' | 'missing' }> {
  if (before.status === 'ok' || before.status === 'missing') return;
  throw new TargetConflictError(
    target.key,
    `target ${where(target)} already holds other bytes than the source (${JSON.stringify(before)}); it is kept and not replaced: find out why ingest's object changed (restore its previous version there if the host overwrote it)`,
  );
}

function assertPositiveInteger(value: number, what: string, fix: string): void {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`invalid ${what} ${value}: ${fix}`);
}

/**
 * Splits an object of `sizeBytes` into parts of `partSizeBytes` (the last one shorter). The part
 * size is raised to whole MiB when the object would need more than {@link MAX_PART_COUNT} parts.
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
  if (Math.ceil(sizeBytes / size) > MAX_PART_COUNT) size = Math.ceil(sizeBytes / MAX_PART_COUNT / MIB) * MIB;
  if (size > MAX_PART_SIZE_BYTES) {
    throw new RangeError(
      `object of ${sizeBytes} bytes is larger than S3 can store (${MAX_PART_COUNT} parts of at most 5 GiB)`,
    );
  }
  const parts: CopyPart[] = [];
  for (let start = 0, partNumber = 1; start < sizeBytes; start += size, partNumber++) {
    parts.push({ partNumber, start, end: Math.min(start + size, sizeBytes) - 1 });
  }
  return { sizeBytes, partSizeBytes: size, multipart: parts.length > 1, parts };
}

/** The part numbers of `state` (or a plan) in batches of `partsPerBatch`: the items of a Map over {@link copyParts}. */
export function partNumberBatches(state: { readonly partCount: number }, partsPerBatch: number): number[][] {
  assertPositiveInteger(partsPerBatch, 'batch size', 'use at least 1 part per batch');
  const batches: number[][] = [];
  for (let first = 1; first <= state.partCount; first += partsPerBatch) {
    const last = Math.min(first + partsPerBatch - 1, state.partCount);
    batches.push(Array.from({ length: last - first + 1 }, (_, i) => first + i));
  }
  return batches;
}

function where(object: S3ObjectRef): string {
  return `s3://${object.bucket}/${object.key}`;
}

/** Size and ETag of the source; a missing source is a {@link SourceChangedError}. */
async function headSource(
  source: S3ObjectRef,
  signal?: AbortSignal,
): Promise<{ sizeBytes: number; etag?: string }> {
  try {
    const head = await source.client.send(new HeadObjectCommand({ Bucket: source.bucket, Key: source.key }), {
      abortSignal: signal,
    });
    return { sizeBytes: head.ContentLength ?? 0, ...(head.ETag ? { etag: head.ETag } : {}) };
  } catch (error) {
    if (isNotFound(error)) {
      throw new SourceChangedError(`source ${where(source)} does not exist; list the source again`, {
        cause: error,
      });
    }
    throw error;
  }
}

/** A GET of bytes `start`..`end` (all of an empty object when end < start) of an object of `totalBytes`. */
async function openRange(
  source: S3ObjectRef,
  start: number,
  end: number,
  totalBytes: number,
  etag: string | undefined,
  signal: AbortSignal | undefined,
): Promise<Readable> {
  try {
    const out = await source.client.send(
      new GetObjectCommand({
        Bucket: source.bucket,
        Key: source.key,
        ...(end >= start ? { Range: `bytes=${start}-${end}` } : {}),
        ...(etag ? { IfMatch: etag } : {}),
      }),
      { abortSignal: signal },
    );
    const length = Math.max(0, end - start + 1);
    // A range of a larger object would copy a prefix of it: the total in Content-Range must match too.
    const total = out.ContentRange ? /\/(\d+)$/.exec(out.ContentRange)?.[1] : undefined;
    const wrongTotal = total !== undefined && Number(total) !== totalBytes;
    if ((out.ContentLength !== undefined && out.ContentLength !== length) || wrongTotal) {
      (out.Body as Readable | undefined)?.destroy();
      throw new SourceChangedError(
        `source ${where(source)} answered ${out.ContentLength} bytes (${out.ContentRange ?? 'no Content-Range'}) for bytes ${start}-${end} of ${totalBytes}; it is not the object that was planned: list it again and copy it again`,
      );
    }
    return out.Body as Readable;
  } catch (error) {
    const status = (error as SdkError)?.$metadata?.httpStatusCode;
    if (isNotFound(error) || status === 412 || status === 416) {
      throw new SourceChangedError(
        `source ${where(source)} changed or disappeared during the copy (HTTP ${status}); copy it again`,
        { cause: error },
      );
    }
    throw error;
  }
}

/** Counts the bytes passing and hands each chunk to `onChunk`; fails if the count is not `length`. */
function meter(length: number, what: string, onChunk?: (chunk: Buffer) => void): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      seen += chunk.length;
      if (seen > length) {
        callback(new SourceChangedError(`${what} sent more than the expected ${length} bytes`));
        return;
      }
      onChunk?.(chunk);
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      callback(
        seen === length ? null : new SourceChangedError(`${what} ended after ${seen} of ${length} bytes`),
      );
    },
  });
}

/**
 * Pipes `body` through `stages` into `send(last stage)` (an SDK request reading the stream),
 * cancelling every side when one fails; the first failure is the one thrown.
 */
async function pipeInto<T>(
  body: Readable,
  stages: readonly [Transform, ...Transform[]],
  send: (body: Readable, signal: AbortSignal) => Promise<T>,
  outer: AbortSignal | undefined,
): Promise<T> {
  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(outer?.reason);
  if (outer?.aborted) throw outer.reason;
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  const last = stages[stages.length - 1] as Transform;
  try {
    const piping = pipeline([body, ...stages], { signal: controller.signal }).catch((error: unknown) => {
      controller.abort(error);
      throw error;
    });
    const sending = send(last, controller.signal).catch((error: unknown) => {
      controller.abort(error);
      throw error;
    });
    const [, result] = await Promise.all([piping, sending]).catch(async (error: unknown) => {
      // Let the other side settle so no socket is left half-used, then report the first failure.
      await Promise.allSettled([piping, sending]);
      throw controller.signal.reason instanceof Error ? controller.signal.reason : error;
    });
    return result;
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
  }
}

async function copyOnePart(
  source: S3ObjectRef,
  target: S3ObjectRef,
  state: CopyState,
  part: CopyPart,
  signal: AbortSignal | undefined,
  onChunk?: (chunk: Buffer) => void,
): Promise<CompletedPart> {
  const length = part.end - part.start + 1;
  const body = await openRange(source, part.start, part.end, state.sizeBytes, state.sourceETag, signal);
  const through = meter(length, `source ${where(source)} part ${part.partNumber}`, onChunk);
  const out = await pipeInto(
    body,
    [through],
    (stream, abortSignal) =>
      target.client.send(
        new UploadPartCommand({
          Bucket: target.bucket,
          Key: target.key,
          UploadId: state.uploadId,
          PartNumber: part.partNumber,
          ContentLength: length,
          Body: stream,
        }),
        { abortSignal },
      ),
    signal,
  );
  if (!out.ETag) throw new Error(`target ${where(target)} returned no ETag for part ${part.partNumber}`);
  return { partNumber: part.partNumber, etag: out.ETag, sizeBytes: length };
}

/**
 * Starts a spread-out copy: reads the source's size and ETag and creates the multipart upload at
 * the target. For an object of at most one part, use {@link copyObject} instead (one PutObject).
 */
export async function startCopy(
  source: S3ObjectRef,
  target: S3ObjectRef,
  options: { readonly partSizeBytes?: number; readonly signal?: AbortSignal } = {},
): Promise<CopyState> {
  const { sizeBytes, etag } = await headSource(source, options.signal);
  const plan = planCopy(sizeBytes, options.partSizeBytes);
  const created = await target.client.send(
    new CreateMultipartUploadCommand({ Bucket: target.bucket, Key: target.key }),
    { abortSignal: options.signal },
  );
  if (!created.UploadId) throw new Error(`target ${where(target)} returned no upload id`);
  return {
    sizeBytes,
    partSizeBytes: plan.partSizeBytes,
    partCount: plan.parts.length,
    uploadId: created.UploadId,
    ...(etag ? { sourceETag: etag } : {}),
  };
}

/**
 * Copies the parts `partNumbers` of a started copy, `concurrency` at a time, each streamed from a
 * ranged GET into UploadPart and retried up to `attempts` times with a fresh GET. Safe to run
 * again for the same part numbers (a part uploaded twice replaces itself). Does not abort the
 * upload on failure: the caller decides (a state machine retries the batch, then calls {@link abortCopy}).
 */
export async function copyParts(
  source: S3ObjectRef,
  target: S3ObjectRef,
  state: CopyState,
  partNumbers: readonly number[],
  options: {
    readonly concurrency?: number;
    readonly attempts?: number;
    readonly signal?: AbortSignal;
    readonly onPart?: (part: CompletedPart) => void;
  } = {},
): Promise<CompletedPart[]> {
  const plan = planCopy(state.sizeBytes, state.partSizeBytes);
  const parts = partNumbers.map((n) => {
    const part = plan.parts[n - 1];
    if (!part) throw new RangeError(`part ${n} does not exist: the copy has parts 1 to ${plan.parts.length}`);
    return part;
  });
  const attempts = options.attempts ?? DEFAULT_PART_ATTEMPTS;
  assertPositiveInteger(attempts, 'attempts', 'use at least 1');
  const results: CompletedPart[] = [];
  await runPool(
    parts,
    options.concurrency ?? DEFAULT_COPY_CONCURRENCY,
    undefined,
    async (part, signal) => {
      for (let attempt = 1; ; attempt++) {
        try {
          const done = await copyOnePart(source, target, state, part, signal);
          results.push(done);
          options.onPart?.(done);
          return;
        } catch (error) {
          if (attempt >= attempts || error instanceof SourceChangedError || signal.aborted) throw error;
          await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
        }
      }
    },
    options.signal,
  );
  return results.sort((a, b) => a.partNumber - b.partNumber);
}

/** Completes a spread-out copy with the results of every {@link copyParts} call. */
export async function completeCopy(
  target: S3ObjectRef,
  state: CopyState,
  parts: readonly CompletedPart[],
  options: { readonly signal?: AbortSignal } = {},
): Promise<{ etag?: string }> {
  const byNumber = new Map(parts.map((p) => [p.partNumber, p]));
  const missing: number[] = [];
  for (let n = 1; n <= state.partCount; n++) if (!byNumber.has(n)) missing.push(n);
  if (missing.length > 0) {
    throw new Error(
      `cannot complete the copy to ${where(target)}: parts ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''} were not copied; run copyParts for them first`,
    );
  }
  const sizeBytes = [...byNumber.values()].reduce((sum, p) => sum + p.sizeBytes, 0);
  if (sizeBytes !== state.sizeBytes) {
    throw new CopyIntegrityError(
      `parts copied to ${where(target)} add up to ${sizeBytes} bytes, the source has ${state.sizeBytes}; abort and copy again`,
    );
  }
  const out = await target.client.send(
    new CompleteMultipartUploadCommand({
      Bucket: target.bucket,
      Key: target.key,
      UploadId: state.uploadId,
      MultipartUpload: {
        Parts: [...byNumber.values()]
          .sort((a, b) => a.partNumber - b.partNumber)
          .map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })),
      },
    }),
    { abortSignal: options.signal },
  );
  return out.ETag ? { etag: out.ETag } : {};
}

/** Aborts a multipart upload so no parts are left behind (and billed); an upload already gone is not an error. */
export async function abortCopy(target: S3ObjectRef, uploadId: string): Promise<void> {
  try {
    await target.client.send(
      new AbortMultipartUploadCommand({ Bucket: target.bucket, Key: target.key, UploadId: uploadId }),
    );
  } catch (error) {
    if (isNotFound(error) || (error as SdkError)?.name === 'NoSuchUpload') return;
    throw error;
  }
}

/**
 * Runs `work` over `items` with at most `concurrency` at once. With `window`, item i starts only
 * once every item before i - window has finished (bounds what an in-order consumer must hold).
 * The first failure cancels the others (through the signal given to `work`) and is thrown once
 * all have settled.
 */
async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  window: number | undefined,
  work: (item: T, signal: AbortSignal) => Promise<void>,
  outer?: AbortSignal,
): Promise<void> {
  assertPositiveInteger(concurrency, 'concurrency', 'use at least 1');
  const controller = new AbortController();
  let wake: (() => void)[] = [];
  const notify = () => {
    const waiting = wake;
    wake = [];
    for (const resolve of waiting) resolve();
  };
  const onOuterAbort = () => {
    controller.abort(outer?.reason);
    notify();
  };
  if (outer?.aborted) throw outer.reason;
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  let next = 0;
  let lowestUnfinished = 0;
  const finished = new Set<number>();
  let firstError: unknown;
  const worker = async () => {
    while (!controller.signal.aborted) {
      const i = next;
      if (i >= items.length) return;
      if (window !== undefined && i >= lowestUnfinished + window) {
        await new Promise<void>((resolve) => wake.push(resolve));
        continue;
      }
      next++;
      try {
        await work(items[i] as T, controller.signal);
      } catch (error) {
        firstError ??= error;
        controller.abort(error);
        notify();
        return;
      }
      finished.add(i);
      while (finished.has(lowestUnfinished)) finished.delete(lowestUnfinished++);
      notify();
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
  }
  if (firstError !== undefined) throw firstError;
  if (controller.signal.aborted) throw controller.signal.reason;
}

/**
 * sha256 over parts that finish out of order: the lowest unfinished part is hashed as it streams,
 * later parts are kept until their turn.
 */
class InOrderHash {
  private hash = createHash('sha256');
  /** The hash before the current part's first byte: a failed current part restarts from here. */
  private beforeCurrent = this.hash.copy();
  private current: number;
  private readonly waiting = new Map<number, { chunks: Buffer[]; done: boolean }>();

  constructor(firstPart: number) {
    this.current = firstPart;
  }

  write(part: number, chunk: Buffer): void {
    if (part === this.current) this.hash.update(chunk);
    else this.entry(part).chunks.push(chunk);
  }

  finish(part: number): void {
    if (part !== this.current) {
      this.entry(part).done = true;
      return;
    }
    for (;;) {
      this.current++;
      this.beforeCurrent = this.hash.copy();
      const next = this.waiting.get(this.current);
      if (!next) return;
      this.waiting.delete(this.current);
      for (const chunk of next.chunks) this.write(this.current, chunk);
      if (!next.done) return;
    }
  }

  /** Forgets what a failed part sent, so it can be tried again. */
  reset(part: number): void {
    if (part === this.current) this.hash = this.beforeCurrent.copy();
    else this.waiting.delete(part);
  }

  digest(): string {
    return this.hash.digest('hex');
  }

  private entry(part: number) {
    let entry = this.waiting.get(part);
    if (!entry) {
      entry = { chunks: [], done: false };
      this.waiting.set(part, entry);
    }
    return entry;
  }
}

/**
 * Holds back the last chunk until the stream's sha256 and size match `expected`, so a wrong copy
 * never sends its final bytes and the upload fails incomplete instead of storing it.
 */
function verifyBeforeLastByte(
  expected: { sizeBytes: number; sha256: string } | undefined,
  what: string,
): { stream: Transform; sha256: () => string } {
  const hash = createHash('sha256');
  let digest: string | undefined;
  let held: Buffer | undefined;
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      hash.update(chunk);
      size += chunk.length;
      const previous = held;
      held = chunk;
      callback(null, previous);
    },
    flush(callback: TransformCallback) {
      digest = hash.digest('hex');
      if (expected && (size !== expected.sizeBytes || digest !== expected.sha256)) {
        callback(
          new CopyIntegrityError(
            `${what} has ${size} bytes with sha256 ${digest}, expected ${expected.sizeBytes} bytes with sha256 ${expected.sha256}; nothing was written to the target`,
          ),
        );
        return;
      }
      callback(null, held);
    },
  });
  return { stream, sha256: () => digest ?? hash.copy().digest('hex') };
}

/** One GET piped into one PutObject, hashed on the way and held back at the end until the hash matched. */
async function putWhole(
  source: S3ObjectRef,
  target: S3ObjectRef,
  sizeBytes: number,
  etag: string | undefined,
  options: CopyOptions,
): Promise<CopyResult> {
  const body = await openRange(source, 0, sizeBytes - 1, sizeBytes, etag, options.signal);
  const check = verifyBeforeLastByte(options.expected, `source ${where(source)}`);
  const counted = meter(sizeBytes, `source ${where(source)}`);
  const out = await pipeInto(
    body,
    [counted, check.stream],
    (stream, abortSignal) =>
      target.client.send(
        new PutObjectCommand({
          Bucket: target.bucket,
          Key: target.key,
          ContentLength: sizeBytes,
          Body: stream,
        }),
        { abortSignal },
      ),
    options.signal,
  );
  options.onPart?.({ partNumber: 1, etag: out.ETag ?? '', sizeBytes });
  return {
    sizeBytes,
    sha256: check.sha256(),
    multipart: false,
    partCount: 1,
    ...(out.ETag ? { etag: out.ETag } : {}),
  };
}

/**
 * Copies one object in this process: one PutObject for at most one part, else a multipart upload
 * with `concurrency` parts in flight, aborted on any failure. Returns the sha256 of the bytes
 * copied; with `expected`, a mismatch throws {@link CopyIntegrityError} and leaves no new object.
 */
export async function copyObject(
  source: S3ObjectRef,
  target: S3ObjectRef,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const head =
    options.sizeBytes === undefined
      ? await headSource(source, options.signal)
      : { sizeBytes: options.sizeBytes };
  const etag = 'etag' in head ? head.etag : undefined;
  const plan = planCopy(head.sizeBytes, options.partSizeBytes);
  const { expected } = options;
  if (expected && expected.sizeBytes !== plan.sizeBytes) {
    throw new CopyIntegrityError(
      `source ${where(source)} has ${plan.sizeBytes} bytes, expected ${expected.sizeBytes}; not copied`,
    );
  }

  if (!plan.multipart) {
    // The SDK cannot retry a request whose body is a stream it has consumed, so a failed attempt
    // starts again from a fresh GET.
    for (let attempt = 1; ; attempt++) {
      try {
        return await putWhole(source, target, plan.sizeBytes, etag, options);
      } catch (error) {
        const final =
          attempt >= DEFAULT_PART_ATTEMPTS ||
          error instanceof CopyIntegrityError ||
          error instanceof SourceChangedError ||
          options.signal?.aborted;
        if (final) throw error;
        await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
      }
    }
  }

  const created = await target.client.send(
    new CreateMultipartUploadCommand({ Bucket: target.bucket, Key: target.key }),
    { abortSignal: options.signal },
  );
  const uploadId = created.UploadId;
  if (!uploadId) throw new Error(`target ${where(target)} returned no upload id`);
  const state: CopyState = {
    sizeBytes: plan.sizeBytes,
    partSizeBytes: plan.partSizeBytes,
    partCount: plan.parts.length,
    uploadId,
    ...(etag ? { sourceETag: etag } : {}),
  };
  const hash = new InOrderHash(1);
  const completed: CompletedPart[] = [];
  // A part started ahead of the one being hashed may have to be held whole until its turn.
  const ahead = Math.floor((options.hashBufferBytes ?? DEFAULT_HASH_BUFFER_BYTES) / plan.partSizeBytes);
  const concurrency = Math.max(1, Math.min(options.concurrency ?? DEFAULT_COPY_CONCURRENCY, ahead + 1));
  try {
    await runPool(
      plan.parts,
      concurrency,
      concurrency,
      async (part, signal) => {
        for (let attempt = 1; ; attempt++) {
          try {
            const done = await copyOnePart(source, target, state, part, signal, (chunk) =>
              hash.write(part.partNumber, chunk),
            );
            hash.finish(part.partNumber);
            completed.push(done);
            options.onPart?.(done);
            return;
          } catch (error) {
            const retry =
              attempt < DEFAULT_PART_ATTEMPTS && !(error instanceof SourceChangedError) && !signal.aborted;
            if (!retry) throw error;
            hash.reset(part.partNumber);
            await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
          }
        }
      },
      options.signal,
    );
    const sha256 = hash.digest();
    if (expected && sha256 !== expected.sha256) {
      throw new CopyIntegrityError(
        `source ${where(source)} has sha256 ${sha256}, expected ${expected.sha256}; the upload was aborted, nothing was written to the target`,
      );
    }
    const done = await completeCopy(target, state, completed, { signal: options.signal });
    return {
      sizeBytes: plan.sizeBytes,
      sha256,
      multipart: true,
      partCount: plan.parts.length,
      ...(done.etag ? { etag: done.etag } : {}),
    };
  } catch (error) {
    await abortCopy(target, uploadId).catch((abortError: unknown) => {
      throw new AggregateError(
        [error, abortError],
        `copy to ${where(target)} failed and its multipart upload ${uploadId} could not be aborted; the bucket's lifecycle rule removes it later`,
      );
    });
    throw error;
  }
}

export type ReplicateResult =
  | {
      /** A verified copy was there already: nothing was read from the source or written. */
      readonly action: 'skipped';
      readonly verification: VerifyCopyResult & { readonly status: 'ok' };
    }
  | {
      readonly action: 'copied';
      /** Why it was copied: the target had nothing at the key (other bytes are never replaced). */
      readonly before: 'missing';
      readonly copy: CopyResult;
      /** The check of the new copy at the target, when `readBack` was on. */
      readonly verification?: VerifyCopyResult & { readonly status: 'ok' };
    };

/**
 * Makes sure `target` holds a verified copy of `source`: skips when {@link verifyCopy} says the
 * copy is there and right, copies with {@link copyObject} when there is none (checking the bytes
 * against `expected` on the way), and throws {@link TargetConflictError} when the target holds
 * other bytes: an existing copy is never replaced. With `readBack`
 * (default), the new copy is then read at the target and checked again; a failed check throws
 * {@link CopyIntegrityError} so the run fails and the next one copies again. Never deletes anything.
 */
export async function replicateObject(
  source: S3ObjectRef,
  target: S3ObjectRef,
  expected: ExpectedObject,
  options: CopyOptions & { readonly readBack?: boolean } = {},
): Promise<ReplicateResult> {
  const before = await verifyCopy(target, expected, {
    ...(options.signal ? { signal: options.signal } : {}),
  });
  if (before.status === 'ok') return { action: 'skipped', verification: before };
  refuseReplacing(target, before);
  const copy = await copyObject(source, target, {
    ...options,
    sizeBytes: expected.sizeBytes,
    ...(expected.sha256 ? { expected: { sizeBytes: expected.sizeBytes, sha256: expected.sha256 } } : {}),
  });
  if (options.readBack === false) return { action: 'copied', before: before.status, copy };
  const after = await verifyCopy(
    target,
    { sizeBytes: copy.sizeBytes, sha256: copy.sha256 },
    { ...(options.signal ? { signal: options.signal } : {}) },
  );
  if (after.status !== 'ok') {
    throw new CopyIntegrityError(
      `copy of ${where(source)} at ${where(target)} failed its check after upload (${JSON.stringify(after)}); copies are never replaced, so later runs report it as a conflict: delete it at the target to have it copied again`,
    );
  }
  return { action: 'copied', before: before.status, copy, verification: after };
}
