/**
 * The streaming half of a copy: the source's HEAD, a ranged GET that checks it got the planned
 * bytes of the planned object, a byte counter, and a pipe from a GET body into an upload request
 * that cancels both sides on the first failure.
 */
import type { Readable } from 'node:stream';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { isNotFound, type S3ObjectRef, type SdkError, SourceChangedError, where } from './s3-object.ts';

/** Size and ETag of the source; a missing source is a {@link SourceChangedError}. */
export async function headSource(
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
export async function openRange(
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
export function meter(length: number, what: string, onChunk?: (chunk: Buffer) => void): Transform {
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
export async function pipeInto<T>(
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
