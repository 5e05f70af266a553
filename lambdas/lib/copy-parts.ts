/**
 * The steps of a spread-out multipart copy ({@link startCopy}, {@link copyParts} in batches,
 * {@link completeCopy}, {@link abortCopy} on failure), each small enough for one Lambda, with
 * every value passed between them plain JSON. copyObject runs the same parts in one process.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { assertPositiveInteger, runPool } from '../../core/run-pool.ts';
import { withRetry } from '../../storage/failure.ts';
import {
  type CompletedPart,
  type CopyPart,
  type CopyState,
  DEFAULT_COPY_CONCURRENCY,
  DEFAULT_PART_ATTEMPTS,
  partRetryPolicy,
  planCopy,
} from './copy-plan.ts';
import { headSource, meter, openRange, pipeInto } from './ranged-get.ts';

import {
  CopyIntegrityError,
  isNotFound,
  type S3ObjectRef,
  type SdkError,
  SourceChangedError,
  where,
} from './s3-object.ts';

export async function copyOnePart(
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
      const done = await withRetry(
        `copy of part ${part.partNumber} of ${where(source)}`,
        partRetryPolicy(attempts),
        () => copyOnePart(source, target, state, part, signal),
        { signal, retryable: (error) => !(error instanceof SourceChangedError) },
      );
      results.push(done);
      options.onPart?.(done);
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
