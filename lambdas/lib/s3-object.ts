/**
 * One object at one S3 endpoint, as the replication steps pass it around, and the errors and
 * checks every step shares (ranged reads, copies, verification).
 */
import type { S3Client } from '@aws-sdk/client-s3';

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

/** A copy did not match what it was expected to be; nothing was left at the target. */
export class CopyIntegrityError extends Error {
  override name = 'CopyIntegrityError';
}

/** The source object changed or disappeared while it was being copied. */
export class SourceChangedError extends Error {
  override name = 'SourceChangedError';
}

/**
 * A create-only PutObject found the key taken (412): nothing was overwritten. `sha256` is what the
 * refused copy would have held. (A 409, another conditional write under way, stays a transient error.)
 */
export class TargetTakenError extends Error {
  override name = 'TargetTakenError';
  readonly sha256: string;
  constructor(message: string, options: { sha256: string; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.sha256 = options.sha256;
  }
}

/** The fields of an AWS SDK error that classify it. */
export interface SdkError {
  name?: string;
  $metadata?: { httpStatusCode?: number };
}

/** An S3 error that means the object (not the bucket or the endpoint) is absent. */
export function isNotFound(error: unknown): boolean {
  const e = error as SdkError;
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}

/** An `If-None-Match: *` write refused because the key exists. */
export function isTargetTaken(error: unknown): boolean {
  const e = error as SdkError;
  return e?.name === 'PreconditionFailed' || e?.$metadata?.httpStatusCode === 412;
}

/**
 * The provider's full-object SHA-256 (hex) in a HEAD's or GET's answer to `ChecksumMode: 'ENABLED'`;
 * undefined when it computed none, or only a checksum of checksums (a multipart upload's
 * COMPOSITE), which no hash of the bytes can be compared with.
 */
export function providerSha256Of(answer: {
  readonly ChecksumSHA256?: string;
  readonly ChecksumType?: string;
}): string | undefined {
  if (!answer.ChecksumSHA256 || answer.ChecksumType === 'COMPOSITE') return undefined;
  return Buffer.from(answer.ChecksumSHA256, 'base64').toString('hex');
}

/** The object as a URL, for messages. */
export function where(object: S3ObjectRef): string {
  return `s3://${object.bucket}/${object.key}`;
}
