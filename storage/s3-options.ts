/**
 * The S3 driver's options and limits, apart from the driver itself so that parsing a repository URL
 * never loads the AWS SDK (see open-storage.ts).
 */

const MIB = 1024 * 1024;

/** The largest object S3 takes in one PutObject. */
export const MAX_SINGLE_PUT_BYTES = 5 * 1024 ** 3;
/** S3's limit on parts per multipart upload. */
export const MAX_PARTS = 10_000;
/** S3's bounds on a part's size (except the last part, which may be smaller). */
export const MIN_PART_SIZE_MIB = 5;
export const MAX_PART_SIZE_MIB = 5 * 1024;
/** The same bounds in bytes, for code that plans parts of a known size (replication). */
export const MIN_PART_SIZE_BYTES = MIN_PART_SIZE_MIB * MIB;
export const MAX_PART_SIZE_BYTES = MAX_PART_SIZE_MIB * MIB;
export const DEFAULT_PART_SIZE_MIB = 16;
export const DEFAULT_QUEUE_SIZE = 1;
export const MAX_QUEUE_SIZE = 16;

/** Everything needed to reach a bucket; credentials are never part of it (the SDK's standard chain provides them). */
export interface S3ClientOptions {
  /** Custom endpoint such as `http://127.0.0.1:9000`. @default - AWS S3 for the region */
  readonly endpoint?: string;
  /** Path-style addressing (`endpoint/bucket/key`), needed by most local servers. @default false */
  readonly forcePathStyle?: boolean;
  /** @default - `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1` with a custom endpoint, else the SDK's chain (profile) */
  readonly region?: string;
  /**
   * `when-required` (default) sends checksums only where the API demands them: many
   * S3-compatible providers and local servers reject or mis-store `aws-chunked` bodies with CRC
   * trailers. `when-supported` is the SDK's default, for AWS S3.
   * @default 'when-required'
   */
  readonly checksum?: 'when-required' | 'when-supported';
  /** Attempts per request, including the first. @default 3 */
  readonly maxAttempts?: number;
  /** Time to establish a TCP/TLS connection. @default 3000 */
  readonly connectionTimeoutMs?: number;
  /**
   * A request fails when it has not been answered this long after it started, its body sent
   * included (a get() body then streams under {@link idleTimeoutMs} alone). Bounds a part upload
   * on a link too slow for its part size.
   * @default 900000 (15 minutes, a Lambda's longest run)
   */
  readonly requestTimeoutMs?: number;
  /**
   * A request fails after this long without a byte moving in either direction (not a cap on total
   * time). It also applies while a get() body is being read: a consumer that stops reading for
   * longer fails the body with {@link StorageUnavailableError}. A hung server costs up to
   * maxAttempts × this.
   * @default 60000
   */
  readonly idleTimeoutMs?: number;
}

export interface S3StorageOptions extends S3ClientOptions {
  readonly bucket: string;
  /** Key prefix inside the bucket: empty, or ending with "/". @default '' */
  readonly prefix?: string;
  /** Multipart part size; bounds memory and the largest object (× 10,000). @default 16 */
  readonly partSizeMiB?: number;
  /** Parts uploaded in parallel by one put; each adds about a part size of memory. @default 1 */
  readonly queueSize?: number;
  /** Send `If-None-Match: *` on create-only puts; turn off for providers that reject the header. @default true */
  readonly conditionalWrites?: boolean;
}

/** The repository URL of an S3 location, without credentials (there never are any in it). */
export function s3DisplayUrl(options: S3StorageOptions): string {
  const where = [
    ...(options.endpoint ? [`endpoint=${options.endpoint}`] : []),
    ...(options.forcePathStyle ? ['path-style=true'] : []),
    ...(options.region ? [`region=${options.region}`] : []),
  ];
  return `s3://${options.bucket}/${options.prefix ?? ''}${where.length > 0 ? `?${where.join('&')}` : ''}`;
}
