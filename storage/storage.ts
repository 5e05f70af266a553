/**
 * The one interface every repository driver implements (`s3://…`, `file://…`). Keys are
 * repository-relative (`v1/<cluster>/…`); a driver maps them under its own bucket prefix or
 * directory. Every driver passes the same contract suite (test/storage/storage-contract.ts).
 */
import { type Readable, Transform } from 'node:stream';

export interface ObjectInfo {
  /** Repository-relative key. */
  readonly key: string;
  readonly sizeBytes: number;
  readonly lastModified: Date;
}

export interface PutOptions {
  /**
   * Create only: if an object already exists at the key, reject with {@link ObjectExistsError} and
   * leave the existing object untouched. Atomic where the provider supports conditional writes
   * (`If-None-Match: *`), otherwise checked just before the write.
   */
  readonly ifAbsent?: boolean;
  /**
   * The body's exact length, when the writer knows it: a driver may then send it in one request
   * without buffering (S3: one streamed PutObject up to 5 GiB, not a multipart upload). A body of
   * another length fails the put and stores nothing.
   */
  readonly sizeBytes?: number;
}

export interface ListOptions {
  /** Only keys after this one (exclusive), as S3's StartAfter: a listing that skips what sorts before. */
  readonly startAfter?: string;
}

export interface ByteRange {
  /** First byte, inclusive. */
  readonly start: number;
  /** Last byte, inclusive. */
  readonly end: number;
}

export interface Storage {
  /** The repository location with any credentials removed, for messages. */
  readonly displayUrl: string;

  /**
   * Streams `body` to `key`. Resolves only once the object is durably stored and complete.
   * Rejects if `body` errors or the write fails; then nothing is visible at `key` (no partial
   * object, no temp file, no open multipart upload). `body` is consumed either way.
   */
  put(key: string, body: Readable, options?: PutOptions): Promise<void>;

  /** The object's bytes (or the inclusive `range` of them); rejects with {@link ObjectNotFoundError} when missing. */
  get(key: string, range?: ByteRange): Promise<Readable>;

  /** Size and time of the object, or `undefined` when there is none. */
  head(key: string): Promise<ObjectInfo | undefined>;

  /** Every object whose key starts with `prefix` (and sorts after `options.startAfter`), in ascending key order. */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;

  /** Removes the object; a missing object is not an error. Only retention deletes; the agent never does. */
  delete(key: string): Promise<void>;

  /**
   * The repository's own clock (an S3 server's `Date` header), to compare the host's with; absent
   * or undefined where the repository has no clock of its own.
   */
  serverTime?(): Promise<Date | undefined>;
}

/** Base class for storage failures; `cause` carries the driver's own error. */
export class StorageError extends Error {
  override name = 'StorageError';
}

export class ObjectNotFoundError extends StorageError {
  override name = 'ObjectNotFoundError';
  readonly key: string;
  constructor(key: string, options?: ErrorOptions) {
    super(`object not found: ${key}`, options);
    this.key = key;
  }
}

export class ObjectExistsError extends StorageError {
  override name = 'ObjectExistsError';
  readonly key: string;
  constructor(key: string, options?: ErrorOptions) {
    super(`object already exists: ${key}`, options);
    this.key = key;
  }
}

/**
 * The repository could not be reached or answered with a server-side error: retrying later may
 * succeed. Callers must never treat this as "missing".
 */
export class StorageUnavailableError extends StorageError {
  override name = 'StorageUnavailableError';
}

/**
 * The repository itself is missing: the bucket does not exist, or the directory of a `file://`
 * repository is not there (an unmounted NAS). Never a sign that one object is missing.
 */
export class RepositoryNotFoundError extends StorageError {
  override name = 'RepositoryNotFoundError';
}

/** The credentials were refused or lack a permission; retrying will not help until they are fixed. */
export class AccessDeniedError extends StorageError {
  override name = 'AccessDeniedError';
}

/**
 * The host clock is too far from the repository's: S3 refused the request signature
 * (RequestTimeTooSkewed), or the agent found the skew itself. Not transient: retrying cannot fix a clock.
 */
export class ClockSkewError extends StorageError {
  override name = 'ClockSkewError';
}

/**
 * Passes a body through, failing it (a {@link StorageError}) when it is not `sizeBytes` long: what
 * each driver puts between a body announced with {@link PutOptions.sizeBytes} and the write.
 */
export function lengthChecked(key: string, sizeBytes: number): Transform {
  let seen = 0;
  const wrong = () =>
    new StorageError(`object ${key} is not the ${sizeBytes} bytes announced (${seen} given)`);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      callback(seen > sizeBytes ? wrong() : null, chunk);
    },
    flush: (callback) => callback(seen < sizeBytes ? wrong() : null),
  });
}
