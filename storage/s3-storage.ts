/**
 * `s3://bucket/prefix` repositories on AWS S3 or any S3-compatible endpoint (MinIO, Backblaze B2,
 * Wasabi, Cloudflare R2, s3rver...).
 *
 * Memory: lib-storage's `Upload` buffers whole parts and concatenates stream chunks into them, so a
 * put costs several part sizes of RSS, not one. Measured on Node 24 (1,000 MiB stream of 64 KiB
 * chunks, s3rver on loopback; RSS above a baseline of ~100 MiB, most of it the loaded SDK):
 * 16 MiB parts × queue 1 → +77..106 MiB; 16 × 2 → +112..140 MiB; 8 × 2 → +79..97 MiB;
 * 5 × 2 → +62 MiB. Roughly (queueSize + 2.5) × partSize plus ~40 MiB of GC lag. The default is
 * 16 MiB parts, one in flight: the smallest footprint that still stores objects far beyond 48 GiB.
 * `queue-size=2` overlaps producing the next part with sending the last one (faster when
 * compression/encryption and the network are similarly fast) for ~30 MiB more. An object smaller
 * than one part is sent with a single PutObject and costs about 2–3× its size (4 parallel puts of
 * 12 MiB: +95 MiB).
 *
 * Maximum object size = partSize × 10,000 parts (S3's limit): 156.25 GiB with the default 16 MiB.
 * A stream of unknown length cannot pick its part size after the fact, so larger objects need a
 * larger `part-size-mib` in the repository URL (64 → 625 GiB with roughly 4× more memory;
 * 525 → 5 TiB, S3's object limit, with gigabytes). A stream that outgrows the limit fails early
 * with an error naming the option, and its multipart upload is aborted.
 *
 * Create-only puts (`ifAbsent`) send `If-None-Match: *` (atomic on AWS S3, R2, MinIO and others)
 * and map 412 to {@link ObjectExistsError}; because some providers and local servers ignore the
 * header, a HEAD is made first as well. That HEAD is not atomic: on a provider without conditional
 * writes, two writers racing for the same new key can both succeed, and the later one wins.
 */

import { PassThrough, type Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { attemptSignal } from './attempt-signal.ts';
import { assertByteRange, assertListPrefix, assertObjectKey } from './object-keys.ts';
import { createS3Client } from './s3-client.ts';
import { mapS3Error, type SdkError } from './s3-errors.ts';
import {
  DEFAULT_PART_SIZE_MIB,
  DEFAULT_QUEUE_SIZE,
  MAX_PART_SIZE_MIB,
  MAX_PARTS,
  MAX_QUEUE_SIZE,
  MAX_SINGLE_PUT_BYTES,
  MIN_PART_SIZE_MIB,
  type S3StorageOptions,
  s3DisplayUrl,
} from './s3-options.ts';
import {
  type ByteRange,
  type ListOptions,
  lengthChecked,
  ObjectExistsError,
  type ObjectInfo,
  ObjectNotFoundError,
  type PutOptions,
  type Storage,
  StorageError,
  StorageUnavailableError,
} from './storage.ts';

export { createS3Client } from './s3-client.ts';

export * from './s3-options.ts';

const MIB = 1024 * 1024;
/** How long aborting a failed multipart upload may take, once the attempt's own deadline has passed. */
const CLEANUP_TIMEOUT_MS = 30_000;

export class S3Storage implements Storage {
  readonly displayUrl: string;
  readonly bucket: string;
  /** Key prefix inside the bucket: empty, or ending with "/". */
  readonly prefix: string;
  readonly client: S3Client;
  readonly partSizeBytes: number;
  /** The largest object a put can store with this part size. */
  readonly maxObjectBytes: number;
  private readonly queueSize: number;
  private readonly conditionalWrites: boolean;
  /** The endpoint, or "AWS S3", for messages. */
  readonly endpoint: string;

  /**
   * @param options where the bucket is and how to write to it
   * @param client an existing client to reuse @default - {@link createS3Client}(options)
   */
  constructor(options: S3StorageOptions, client?: S3Client) {
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? '';
    if (this.prefix !== '' && !this.prefix.endsWith('/')) {
      throw new TypeError(`s3 key prefix "${this.prefix}" must end with "/"`);
    }
    const partSizeMiB = options.partSizeMiB ?? DEFAULT_PART_SIZE_MIB;
    if (
      !Number.isInteger(partSizeMiB) ||
      partSizeMiB < MIN_PART_SIZE_MIB ||
      partSizeMiB > MAX_PART_SIZE_MIB
    ) {
      throw new RangeError(
        `part size ${partSizeMiB} MiB is outside S3's limits: use a whole number from ${MIN_PART_SIZE_MIB} to ${MAX_PART_SIZE_MIB}`,
      );
    }
    this.partSizeBytes = partSizeMiB * MIB;
    this.maxObjectBytes = this.partSizeBytes * MAX_PARTS;
    this.queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
    if (!Number.isInteger(this.queueSize) || this.queueSize < 1 || this.queueSize > MAX_QUEUE_SIZE) {
      throw new RangeError(
        `queue size ${this.queueSize} is not valid: use a whole number from 1 to ${MAX_QUEUE_SIZE}`,
      );
    }
    this.conditionalWrites = options.conditionalWrites ?? true;
    this.client = client ?? createS3Client(options);
    this.displayUrl = s3DisplayUrl(options);
    this.endpoint = options.endpoint ?? 'AWS S3';
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<void> {
    let bodyError: unknown;
    body.on('error', (error) => {
      // An UploadStopped reaches the body only because pipeline() destroys it after the upload failed.
      if (!(error instanceof UploadStopped)) bodyError ??= error;
    });
    try {
      assertObjectKey(key);
      if (options.ifAbsent && (await this.rawHead(key)) !== undefined) {
        // Read the body to its end so the producer finishes normally, but send nothing.
        await pipeline(body, new Writable({ write: (_chunk, _encoding, callback) => callback() }));
        throw new ObjectExistsError(key);
      }
      if (options.sizeBytes !== undefined && options.sizeBytes <= MAX_SINGLE_PUT_BYTES)
        await this.putWhole(key, body, options.sizeBytes, options.ifAbsent === true);
      else await this.upload(key, body, options.ifAbsent === true);
    } catch (error) {
      body.destroy();
      if (bodyError !== undefined) throw bodyError;
      if (error instanceof StorageError || error instanceof TypeError) throw error;
      throw mapS3Error(this, error, 'write', key, options.ifAbsent === true);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    assertObjectKey(key);
    if (range) assertByteRange(range);
    try {
      const response = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.prefix + key,
          ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
        }),
        this.requestOptions(),
      );
      return this.mapStreamErrors(response.Body as Readable, key);
    } catch (error) {
      if ((error as SdkError).name === 'InvalidRange') {
        throw new StorageError(
          `byte range ${range?.start}-${range?.end} starts past the end of ${key}: ask for a range within the object`,
          { cause: error },
        );
      }
      throw mapS3Error(this, error, 'read', key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    assertObjectKey(key);
    const info = await this.rawHead(key);
    if (info !== undefined) return info;
    // A HEAD 404 has no body, so a missing bucket looks like a missing key; a GET tells them apart.
    try {
      const response = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Range: 'bytes=0-0' }),
        this.requestOptions(),
      );
      (response.Body as Readable | undefined)?.destroy();
    } catch (error) {
      const mapped = mapS3Error(this, error, 'read', key);
      if (mapped instanceof ObjectNotFoundError) return undefined;
      if ((error as SdkError).name !== 'InvalidRange') throw mapped;
    }
    // Created between the two requests (or empty, so that byte 0 is out of range).
    return this.rawHead(key);
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    assertListPrefix(prefix);
    const startAfter = options.startAfter === undefined ? undefined : this.prefix + options.startAfter;
    let continuationToken: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + prefix,
            ...(continuationToken ? { ContinuationToken: continuationToken } : {}),
            ...(startAfter && !continuationToken ? { StartAfter: startAfter } : {}),
          }),
          this.requestOptions(),
        );
      } catch (error) {
        throw mapS3Error(this, error, 'list', prefix);
      }
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || !object.Key.startsWith(this.prefix)) continue;
        yield {
          key: object.Key.slice(this.prefix.length),
          sizeBytes: object.Size ?? 0,
          lastModified: object.LastModified ?? new Date(0),
        };
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken);
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key);
    try {
      await this.client.send(
        new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }),
        this.requestOptions(),
      );
    } catch (error) {
      const mapped = mapS3Error(this, error, 'delete', key);
      if (!(mapped instanceof ObjectNotFoundError)) throw mapped;
    }
  }

  /** The server's `Date` header on a one-key listing of the repository's prefix. */
  async serverTime(): Promise<Date | undefined> {
    const command = new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 });
    let date: string | undefined;
    command.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        date = (result.response as { headers?: Record<string, string> }).headers?.date;
        return result;
      },
      { step: 'deserialize', name: 'pgkeepServerDate' },
    );
    try {
      await this.client.send(command, this.requestOptions());
    } catch (error) {
      throw mapS3Error(this, error, 'list', '');
    }
    const parsed = date === undefined ? Number.NaN : Date.parse(date);
    return Number.isNaN(parsed) ? undefined : new Date(parsed);
  }

  /** Per-request options: the bound of the retry attempt this request belongs to, if any. */
  private requestOptions(): { abortSignal?: AbortSignal } {
    const signal = attemptSignal();
    return signal ? { abortSignal: signal } : {};
  }

  /** HEAD without telling a missing bucket from a missing key (both are a bare 404). */
  private async rawHead(key: string): Promise<ObjectInfo | undefined> {
    try {
      const response = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }),
        this.requestOptions(),
      );
      return {
        key,
        sizeBytes: response.ContentLength ?? 0,
        lastModified: response.LastModified ?? new Date(0),
      };
    } catch (error) {
      const { name, $metadata } = error as SdkError;
      if (name === 'NotFound' || name === 'NoSuchKey' || $metadata?.httpStatusCode === 404) return undefined;
      throw mapS3Error(this, error, 'read', key);
    }
  }

  /**
   * A body of known length in one streamed PutObject: one request where a multipart upload of
   * 16 MiB parts makes two more than it has parts, and no part held in memory. A body that ends
   * short of `sizeBytes` or runs past it fails the request, so nothing is stored.
   */
  private async putWhole(key: string, body: Readable, sizeBytes: number, ifAbsent: boolean): Promise<void> {
    const counted = lengthChecked(key, sizeBytes);
    // A body that fails part-way must end the request: the SDK pipes it into the socket, which
    // would otherwise wait for the bytes the length announced until the request times out.
    const bodyFailed = new AbortController();
    const signal = attemptSignal();
    const put = new PutObjectCommand({
      Bucket: this.bucket,
      Key: this.prefix + key,
      Body: counted,
      ContentLength: sizeBytes,
      ...(ifAbsent && this.conditionalWrites ? { IfNoneMatch: '*' } : {}),
    });
    const [fed, stored] = await Promise.allSettled([
      pipeline(body, counted).catch((error: unknown) => {
        bodyFailed.abort(error);
        throw error;
      }),
      this.client.send(put, {
        abortSignal: signal ? AbortSignal.any([signal, bodyFailed.signal]) : bodyFailed.signal,
      }),
    ]);
    if (fed.status === 'rejected') throw fed.reason;
    if (stored.status === 'rejected') throw stored.reason;
  }

  private async upload(key: string, body: Readable, ifAbsent: boolean): Promise<void> {
    let sent = 0;
    const limit = this.maxObjectBytes;
    const partSizeMiB = this.partSizeBytes / MIB;
    const feed = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        sent += chunk.length;
        if (sent > limit) {
          callback(
            new StorageError(
              `object ${key} is larger than ${formatBytes(limit)}, the most ${MAX_PARTS} parts of ${partSizeMiB} MiB can hold: raise part-size-mib in the repository URL (memory use grows with it)`,
            ),
          );
          return;
        }
        callback(null, chunk);
      },
    });
    // lib-storage keeps reading the body and uploading parts after one part has failed for good;
    // stopping the feed on the first failed request makes it abort the upload right away.
    const stop = (error: unknown) => {
      if (!feed.destroyed)
        feed.destroy(new UploadStopped('upload stopped after a failed request', { cause: error }));
    };
    const client = Object.create(this.client) as S3Client;
    const signal = attemptSignal();
    client.send = ((command: Parameters<S3Client['send']>[0], ...rest: unknown[]) =>
      (this.client.send as (...args: unknown[]) => Promise<unknown>)(
        command,
        // Cleaning up after the deadline must not be cut off by it: its own short bound instead.
        command instanceof AbortMultipartUploadCommand
          ? { abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) }
          : { ...(signal ? { abortSignal: signal } : {}), ...(rest[0] as object | undefined) },
      ).catch((error: unknown) => {
        stop(error);
        throw error;
      })) as S3Client['send'];
    const upload = new Upload({
      client,
      params: {
        Bucket: this.bucket,
        Key: this.prefix + key,
        Body: feed,
        ...(ifAbsent && this.conditionalWrites ? { IfNoneMatch: '*' } : {}),
      },
      partSize: this.partSizeBytes,
      queueSize: this.queueSize,
      leavePartsOnError: false,
    });
    // Whatever made the upload fail, the feed must stop too, or pipeline() waits for a reader forever.
    const [fed, uploaded] = await Promise.allSettled([
      pipeline(body, feed),
      upload.done().catch((error: unknown) => {
        stop(error);
        throw error;
      }),
    ]);
    if (uploaded.status === 'rejected') throw uploaded.reason;
    if (fed.status === 'rejected') throw fed.reason;
  }

  /** Passes the body through, turning a connection lost mid-body into {@link StorageUnavailableError}. */
  private mapStreamErrors(source: Readable, key: string): Readable {
    const out = new PassThrough();
    source.once('error', (error) => out.destroy(mapS3Error(this, error, 'read', key)));
    out.once('close', () => source.destroy());
    source.pipe(out);
    return out;
  }
}

/** Stops the body after the upload has failed; never reported itself (the upload's error is). */
class UploadStopped extends Error {}

function formatBytes(bytes: number): string {
  const gib = bytes / 1024 ** 3;
  return gib >= 1024 ? `${(gib / 1024).toFixed(2)} TiB` : `${gib.toFixed(2)} GiB`;
}
