/**
 * Streaming copy of one object between two S3-compatible endpoints: two clients, possibly two
 * providers, so no server-side CopyObject. Nothing is written to disk.
 *
 * - An object of at most one part: one GET, read whole into memory (at most one part, 16 MiB by
 *   default) while it is hashed; only bytes that matched `expected` are sent, in one PutObject
 *   with their Content-MD5, which the target checks before it stores anything (S3, B2, R2, Wasabi
 *   and MinIO all do), so a body damaged on the way to the target is refused, not stored.
 * - Larger: CreateMultipartUpload on the target, then per part a ranged GET piped into
 *   UploadPart, then CompleteMultipartUpload; any failure aborts the upload.
 *
 * Memory: a part of a multipart copy is streamed, never buffered, so {@link copyParts} holds only
 * socket buffers whatever the part size. {@link copyObject} also hashes the bytes in order (sha256,
 * so the caller can check the manifest without reading the copy again); a part that arrives ahead
 * of the one being hashed is kept until its turn, and only as many parts run ahead as fit in
 * `hashBufferBytes` (32 MiB by default), so that is all it holds, whatever the object or part
 * size. Parts too large for that run one at a time: use the spread-out steps for such objects.
 *
 * When one invocation's 15 minutes would not do, the same steps run spread out: {@link planCopy}
 * and {@link startCopy} once, {@link copyParts} for batches of part numbers (a Step Functions
 * Map, each item one Lambda), {@link completeCopy} with all their results, {@link abortCopy} on
 * failure. Every value passed between them is plain JSON.
 *
 * With `expected` (the manifest's size and sha256), {@link copyObject} never makes a wrong copy
 * visible: a multipart upload is aborted instead of completed, and a single PutObject is not sent.
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { CreateMultipartUploadCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { runPool } from '../../core/run-pool.ts';
import { withRetry } from '../../storage/failure.ts';
import { InOrderHash } from './copy-hash.ts';
import { abortCopy, completeCopy, copyOnePart } from './copy-parts.ts';
import {
  type CompletedPart,
  type CopyState,
  DEFAULT_COPY_CONCURRENCY,
  DEFAULT_HASH_BUFFER_BYTES,
  partRetryPolicy,
  planCopy,
} from './copy-plan.ts';
import { headSource, meter, openRange } from './ranged-get.ts';
import {
  CopyIntegrityError,
  isTargetTaken,
  type S3ObjectRef,
  SourceChangedError,
  TargetTakenError,
  where,
} from './s3-object.ts';
import { confirmPut, type ExpectedObject, type VerifyCopyResult, verifyCopy } from './verify-copy.ts';

export * from './copy-parts.ts';
export * from './copy-plan.ts';
export {
  CopyIntegrityError,
  objectIn,
  type S3ObjectRef,
  SourceChangedError,
  TargetTakenError,
} from './s3-object.ts';

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
  /**
   * The target honours `If-None-Match: *` (AWS S3, R2, MinIO): a single PutObject sends it, and
   * a key taken meanwhile fails with {@link TargetTakenError} instead of being overwritten.
   */
  readonly createOnly?: boolean;
}

export interface ReplicateOptions extends CopyOptions {
  /**
   * A listing of the target just now lacked the key: with `createOnly`, no HEAD is made before the
   * PutObject (a 412 still finds a copy made since). Not for keys that may well be there already
   * (the hot path names unsettled segments again, where a HEAD is far cheaper than a refused PUT).
   */
  readonly listedAbsent?: boolean;
  /** Check the new copy at the target. @default true */
  readonly readBack?: boolean;
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

/**
 * One GET read whole (at most one part) and hashed; only bytes that match `expected` go out, in
 * one PutObject with their Content-MD5 so the target refuses a body damaged on the way (BadDigest).
 */
async function putWhole(
  source: S3ObjectRef,
  target: S3ObjectRef,
  sizeBytes: number,
  etag: string | undefined,
  options: CopyOptions,
): Promise<CopyResult> {
  const body = await openRange(source, 0, sizeBytes - 1, sizeBytes, etag, options.signal);
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  // The meter stops the body at sizeBytes, so it fits: held once, not as chunks plus a copy.
  const whole = Buffer.allocUnsafe(sizeBytes);
  let filled = 0;
  await pipeline(
    body,
    meter(sizeBytes, `source ${where(source)}`),
    async (stream: AsyncIterable<Buffer>) => {
      for await (const chunk of stream) {
        sha256.update(chunk);
        md5.update(chunk);
        filled += chunk.copy(whole, filled);
      }
    },
    ...(options.signal ? [{ signal: options.signal }] : []),
  );
  const digest = sha256.digest('hex');
  const { expected } = options;
  if (expected && (sizeBytes !== expected.sizeBytes || digest !== expected.sha256)) {
    throw new CopyIntegrityError(
      `source ${where(source)} has ${sizeBytes} bytes with sha256 ${digest}, expected ${expected.sizeBytes} bytes with sha256 ${expected.sha256}; nothing was written to the target`,
    );
  }
  let out: { ETag?: string };
  try {
    out = await target.client.send(
      new PutObjectCommand({
        Bucket: target.bucket,
        Key: target.key,
        ContentLength: sizeBytes,
        ContentMD5: md5.digest('base64'),
        Body: whole,
        ...(options.createOnly ? { IfNoneMatch: '*' } : {}),
      }),
      { abortSignal: options.signal },
    );
  } catch (error) {
    if (options.createOnly && isTargetTaken(error)) {
      throw new TargetTakenError(`target ${where(target)} already holds an object; it was not overwritten`, {
        sha256: digest,
        cause: error,
      });
    }
    throw error;
  }
  options.onPart?.({ partNumber: 1, etag: out.ETag ?? '', sizeBytes });
  return {
    sizeBytes,
    sha256: digest,
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
    return withRetry(
      `copy of ${where(source)}`,
      partRetryPolicy(),
      () => putWhole(source, target, plan.sizeBytes, etag, options),
      {
        ...(options.signal ? { signal: options.signal } : {}),
        retryable: (error) =>
          !(
            error instanceof CopyIntegrityError ||
            error instanceof SourceChangedError ||
            error instanceof TargetTakenError
          ),
      },
    );
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
        const done = await withRetry(
          `copy of part ${part.partNumber} of ${where(source)}`,
          partRetryPolicy(),
          () =>
            copyOnePart(source, target, state, part, signal, (chunk) => hash.write(part.partNumber, chunk)),
          {
            signal,
            retryable: (error) => !(error instanceof SourceChangedError),
            onRetry: () => hash.reset(part.partNumber),
          },
        );
        hash.finish(part.partNumber);
        completed.push(done);
        options.onPart?.(done);
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
      /** A verified copy was there already: nothing was written. */
      readonly action: 'skipped';
      readonly verification: VerifyCopyResult & { readonly status: 'ok' };
    }
  | {
      readonly action: 'copied';
      /**
       * What the target held before: `missing` (a HEAD found nothing), or `absent` (a listing
       * lacked it and the create-only PutObject found nothing). Other bytes are never replaced.
       */
      readonly before: 'missing' | 'absent';
      readonly copy: CopyResult;
      /** The check of the new copy at the target, when `readBack` was on. */
      readonly verification?: VerifyCopyResult & { readonly status: 'ok' };
    };

/**
 * Makes sure `target` holds a verified copy of `source`, never replacing one, never deleting.
 *
 * - {@link verifyCopy} looks first: a right copy is skipped, other bytes throw
 *   {@link TargetConflictError}, and only a missing one is copied; with `createOnly` (the target
 *   honours `If-None-Match: *`) a single PutObject also carries the header, so a copy made since
 *   the HEAD is not overwritten either.
 * - With `createOnly` and `listedAbsent`, an object of one part gets no HEAD first: the create-only
 *   PutObject is the existence check.
 * - Whenever a create-only PutObject finds the key taken, the copy there is checked against the
 *   bytes just read: the same, it is skipped; other bytes throw {@link TargetConflictError}.
 *
 * With `readBack` (default) the new copy is then checked at the target: for one PutObject, whose
 * Content-MD5 the target verified as it stored the body, a HEAD that finds that object (its size
 * and ETag) at the key; for a multipart copy, {@link verifyCopy} (the provider's checksum or one
 * read). A failed check throws {@link CopyIntegrityError}.
 */
export async function replicateObject(
  source: S3ObjectRef,
  target: S3ObjectRef,
  expected: ExpectedObject,
  options: ReplicateOptions = {},
): Promise<ReplicateResult> {
  const signal = options.signal ? { signal: options.signal } : {};
  const single = !planCopy(expected.sizeBytes, options.partSizeBytes).multipart;
  const createOnly = options.createOnly === true && single;
  let before: 'missing' | 'absent' = 'absent';
  if (!(createOnly && options.listedAbsent === true)) {
    const found = await verifyCopy(target, expected, signal);
    if (found.status === 'ok') return { action: 'skipped', verification: found };
    refuseReplacing(target, found);
    before = found.status;
  }
  let copy: CopyResult;
  try {
    copy = await copyObject(source, target, {
      ...options,
      createOnly,
      sizeBytes: expected.sizeBytes,
      ...(expected.sha256 ? { expected: { sizeBytes: expected.sizeBytes, sha256: expected.sha256 } } : {}),
    });
  } catch (error) {
    if (!(error instanceof TargetTakenError)) throw error;
    // Copied first by an earlier attempt or a concurrent run: it must hold what was just read.
    const found = await verifyCopy(target, { sizeBytes: expected.sizeBytes, sha256: error.sha256 }, signal);
    if (found.status === 'ok') return { action: 'skipped', verification: found };
    refuseReplacing(target, found);
    throw new CopyIntegrityError(
      `target ${where(target)} refused the copy as taken, then held nothing: something deletes there; the next run copies it again`,
    );
  }
  if (options.readBack === false) return { action: 'copied', before, copy };
  const written = { sizeBytes: copy.sizeBytes, sha256: copy.sha256 };
  const after = copy.multipart
    ? await verifyCopy(target, written, signal)
    : await confirmPut(target, { ...written, ...(copy.etag ? { etag: copy.etag } : {}) }, signal);
  if (after.status !== 'ok') {
    throw new CopyIntegrityError(
      `copy of ${where(source)} at ${where(target)} failed its check after upload (${JSON.stringify(after)}); copies are never replaced, so later runs report it as a conflict: delete it at the target to have it copied again`,
    );
  }
  return { action: 'copied', before, copy, verification: after };
}
