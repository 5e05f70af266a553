/**
 * Verifies one copy at a target against what the manifest says about it: size first (a HEAD),
 * then the sha256 of the stored bytes, read as a stream so memory does not grow with the object.
 * Replication runs it before copying (a verified copy is skipped) and after a multipart copy (a
 * bad copy is reported; it is never replaced, see {@link replicateObject}). After a single
 * PutObject whose Content-MD5 the target checked, {@link confirmPut} is enough.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { isNotFound, providerSha256Of, type S3ObjectRef } from './s3-object.ts';

export { isNotFound, type SdkError } from './s3-object.ts';

export interface ExpectedObject {
  readonly sizeBytes: number;
  /**
   * sha256 (hex) of the stored bytes, e.g. the manifest's `sha256`. Without it only the size is
   * checked (WAL objects have no manifest; pass the hash {@link copyObject} returned when there is one).
   */
  readonly sha256?: string;
}

export type VerifyCopyResult =
  | {
      readonly status: 'ok';
      readonly sizeBytes: number;
      /**
       * `read`: the bytes were read and hashed. `provider-checksum`: the provider's full-object
       * SHA-256 checksum matched, no read needed. `size-only`: no hash was expected.
       * `content-md5`: the target checked the body against its Content-MD5 as it stored it, and
       * that object (its ETag) of that size is at the key.
       */
      readonly method: 'read' | 'provider-checksum' | 'size-only' | 'content-md5';
    }
  | { readonly status: 'missing' }
  | { readonly status: 'size-mismatch'; readonly expectedSizeBytes: number; readonly actualSizeBytes: number }
  | { readonly status: 'hash-mismatch'; readonly expectedSha256: string; readonly actualSha256: string };

/**
 * Checks the object at `object` against `expected`. Resolves `missing` only for a 404 (on AWS a
 * role without s3:ListBucket gets 403 for a missing key: that, like any other error, rejects, so
 * an outage is never taken for a missing copy).
 */
export async function verifyCopy(
  object: S3ObjectRef,
  expected: ExpectedObject,
  options: { readonly signal?: AbortSignal } = {},
): Promise<VerifyCopyResult> {
  if (expected.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(expected.sha256)) {
    throw new TypeError(`expected sha256 "${expected.sha256}" is not 64 lower-case hex digits`);
  }
  let head: { ContentLength?: number; ChecksumSHA256?: string; ChecksumType?: string };
  try {
    head = await object.client.send(
      new HeadObjectCommand({ Bucket: object.bucket, Key: object.key, ChecksumMode: 'ENABLED' }),
      { abortSignal: options.signal },
    );
  } catch (error) {
    if (isNotFound(error)) return { status: 'missing' };
    throw error;
  }
  const actualSizeBytes = head.ContentLength ?? 0;
  if (actualSizeBytes !== expected.sizeBytes) {
    return { status: 'size-mismatch', expectedSizeBytes: expected.sizeBytes, actualSizeBytes };
  }
  if (expected.sha256 === undefined) return { status: 'ok', sizeBytes: actualSizeBytes, method: 'size-only' };

  // A provider that computed a full-object SHA-256 at upload saves the read.
  if (providerSha256Of(head) === expected.sha256) {
    return { status: 'ok', sizeBytes: actualSizeBytes, method: 'provider-checksum' };
  }

  let body: Readable;
  try {
    const out = await object.client.send(new GetObjectCommand({ Bucket: object.bucket, Key: object.key }), {
      abortSignal: options.signal,
    });
    body = out.Body as Readable;
  } catch (error) {
    if (isNotFound(error)) return { status: 'missing' };
    throw error;
  }
  const hash = createHash('sha256');
  let readBytes = 0;
  const consume = async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) {
      hash.update(chunk);
      readBytes += chunk.length;
    }
  };
  await (options.signal ? pipeline(body, consume, { signal: options.signal }) : pipeline(body, consume));
  if (readBytes !== expected.sizeBytes) {
    // Replaced between the HEAD and the GET.
    return { status: 'size-mismatch', expectedSizeBytes: expected.sizeBytes, actualSizeBytes: readBytes };
  }
  const actualSha256 = hash.digest('hex');
  if (actualSha256 !== expected.sha256) {
    return { status: 'hash-mismatch', expectedSha256: expected.sha256, actualSha256 };
  }
  return { status: 'ok', sizeBytes: actualSizeBytes, method: 'read' };
}

/**
 * Confirms a PutObject whose body the target checked against its Content-MD5 before storing it
 * (the bytes sent were hashed and matched `written.sha256` before they went out): one HEAD must
 * find an object of that size with the ETag the PutObject returned. Any other ETag (another
 * writer, or a provider that changes ETags) falls back to {@link verifyCopy}, which reads.
 */
export async function confirmPut(
  object: S3ObjectRef,
  written: { readonly sizeBytes: number; readonly sha256: string; readonly etag?: string },
  options: { readonly signal?: AbortSignal } = {},
): Promise<VerifyCopyResult> {
  let head: { ContentLength?: number; ETag?: string };
  try {
    head = await object.client.send(new HeadObjectCommand({ Bucket: object.bucket, Key: object.key }), {
      abortSignal: options.signal,
    });
  } catch (error) {
    if (isNotFound(error)) return { status: 'missing' };
    throw error;
  }
  const actualSizeBytes = head.ContentLength ?? 0;
  if (actualSizeBytes !== written.sizeBytes) {
    return { status: 'size-mismatch', expectedSizeBytes: written.sizeBytes, actualSizeBytes };
  }
  if (written.etag !== undefined && head.ETag === written.etag) {
    return { status: 'ok', sizeBytes: actualSizeBytes, method: 'content-md5' };
  }
  return verifyCopy(object, { sizeBytes: written.sizeBytes, sha256: written.sha256 }, options);
}
