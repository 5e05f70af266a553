/**
 * Pushing one WAL file (segment, `.partial`, `.history` or backup history file) into the
 * repository under PostgreSQL's archive_command contract (docs/physical.md tables its exit codes):
 *
 * - resolves only once the object is durably stored and read back with its hash checked;
 * - the same name with the same content already stored resolves ("already-stored"): PostgreSQL
 *   re-archives after a crash;
 * - the same name with other content rejects with {@link WalConflictError} and writes nothing;
 * - a segment whose header names another system identifier than the repository's, or than the
 *   local pg_control, rejects with {@link ForeignWalError};
 * - transient repository failures are retried until the policy's deadline, then reject.
 *
 * The object key carries a prefix of the plaintext sha256 (core/keys.ts walKey), so "is this exact
 * content already stored?" is a listing, never a decryption: the host holds no identity.
 */
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { DEFAULT_ZSTD_LEVEL } from '../../core/codec.ts';
import { WAL_HASH_PREFIX_HEX, walFilePrefix, walKey } from '../../core/keys.ts';
import { mustParseWalFileName, type WalFileName } from '../../core/wal-names.ts';
import { ObjectExistsError, type Storage } from '../../storage/storage.ts';
import { storeCompressed, storeObject } from '../object-store.ts';
import { defaultDataDir, ensureClusterIdentity, localSystemIdentifier } from './cluster-identity.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from './retry.ts';
import { storedWalVersions, verifyStored } from './stored-wal.ts';
import { ForeignWalError, WalConflictError } from './wal-errors.ts';
import { checkFacts, IN_MEMORY_MAX_BYTES, inspect, readCompressed } from './wal-read.ts';

export { ensureClusterIdentity, localSystemIdentifier, readClusterIdentity } from './cluster-identity.ts';
export { storedWalVersions, verifyStored } from './stored-wal.ts';
export { ForeignWalError, WalConflictError } from './wal-errors.ts';
export { sha256OfFile } from './wal-read.ts';

export interface WalPushOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly recipients: readonly string[];
  /** The file to push, as archive_command's `%p` (relative to the data directory, the command's cwd). */
  readonly path: string;
  /**
   * The data directory whose pg_control names the local system identifier.
   * @default - the directory above `pg_wal/` in `path`, when `path` is inside a `pg_wal` directory
   */
  readonly dataDir?: string;
  /** Where the system identifier confirmed against the repository is remembered, to skip a GET per push. */
  readonly cacheDir?: string;
  readonly retry?: RetryPolicy;
  /** Read the stored object back and check its sha256. @default true */
  readonly readBack?: boolean;
  readonly zstdLevel?: number;
  readonly signal?: AbortSignal;
}

export interface WalPushResult {
  readonly walFileName: string;
  readonly key: string;
  readonly outcome: 'stored' | 'already-stored';
  readonly plaintextSha256: string;
  readonly plaintextSizeBytes: number;
  /** Stored (compressed, encrypted) size; undefined when the object was already there. */
  readonly sizeBytes?: number;
  readonly systemIdentifier?: string;
}

/**
 * Reading and compressing (CPU on this thread) runs one file at a time, in the order pushes
 * began. In a process pushing several files at once (the agent, the transient pusher) the oldest
 * file, the one PostgreSQL's archiver is waiting for, is then stored first instead of all of them
 * finishing together; uploads and read-backs still overlap with the next file's compression.
 */
let compressing: Promise<unknown> = Promise.resolve();
function oneAtATime<T>(work: () => Promise<T>): Promise<T> {
  const turn = compressing.then(work, work);
  compressing = turn.catch(() => undefined);
  return turn;
}

/** Pushes one WAL file; see the module comment for the contract. */
export async function pushWalFile(options: WalPushOptions): Promise<WalPushResult> {
  const { storage, cluster } = options;
  const retry = options.retry ?? DEFAULT_RETRY_POLICY;
  const wal = mustParseWalFileName(basename(options.path));
  // What the repository holds of this name is asked while the file is read and compressed: a
  // repository round trip (S3) then costs no time of its own. Any version another push stores
  // after this listing is found by the listing after the write.
  const listing = new AbortController();
  const listVersions = (signal?: AbortSignal) =>
    withRetry(
      `listing ${walFilePrefix(cluster, wal.name)}`,
      retry,
      () => storedWalVersions(storage, cluster, wal.name),
      signal,
    );
  const before = listVersions(listing.signal);
  before.catch(() => undefined);
  let prepared: Awaited<ReturnType<typeof readAndCheck>>;
  try {
    prepared = await readAndCheck(options, wal, retry);
  } catch (error) {
    // A file that cannot be pushed ends the command now, not once the listing's retries give up.
    listing.abort(error);
    throw error;
  }
  const { inMemory, facts, systemIdentifier } = prepared;

  const key = walKey(cluster, wal.name, facts.sha256);
  const ourPrefix = facts.sha256.slice(0, WAL_HASH_PREFIX_HEX);
  const base = {
    walFileName: wal.name,
    key,
    plaintextSha256: facts.sha256,
    plaintextSizeBytes: facts.sizeBytes,
    ...(systemIdentifier === undefined ? {} : { systemIdentifier }),
  };
  const checkExisting = async (
    listed: ReturnType<typeof listVersions> = listVersions(),
  ): Promise<'absent' | 'same'> => {
    const versions = await listed;
    const other = versions.find((v) => v.hashPrefix !== ourPrefix);
    if (other) {
      throw new WalConflictError(
        `WAL file ${wal.name} is already archived with different content (${other.key}; this file's sha256 ` +
          `starts ${ourPrefix}): refusing to store a second version. Two clusters may be archiving into ` +
          `cluster "${cluster}", or ${options.path} was altered; check archive_command and the cluster name`,
      );
    }
    return versions.length > 0 ? 'same' : 'absent';
  };

  if ((await checkExisting(before)) === 'same') return { ...base, outcome: 'already-stored' };

  let stored: Awaited<ReturnType<typeof storeObject>> | undefined;
  try {
    stored = await withRetry(`storing ${key}`, retry, () =>
      inMemory
        ? storeCompressed({
            storage,
            key,
            compressed: inMemory.compressed,
            plaintextSha256: inMemory.sha256,
            plaintextSizeBytes: inMemory.sizeBytes,
            recipients: options.recipients,
          })
        : storeObject({
            storage,
            key,
            source: createReadStream(options.path, { highWaterMark: 1024 * 1024 }),
            recipients: options.recipients,
            ...(options.zstdLevel === undefined ? {} : { zstdLevel: options.zstdLevel }),
          }),
    );
  } catch (error) {
    // A concurrent push of the same content (the agent and archive_command) won the race.
    if (error instanceof ObjectExistsError) return { ...base, outcome: 'already-stored' };
    throw error;
  }
  if (stored.plaintextSha256 !== facts.sha256) {
    throw new Error(
      `WAL file ${options.path} changed while it was being pushed (sha256 ${facts.sha256} then ${stored.plaintextSha256}); ` +
        `${key} may hold the second version. PostgreSQL never changes a segment that is waiting to be archived: ` +
        'something else is writing to pg_wal',
    );
  }
  // Both read what is now stored, so they run together: the object read back with its hash
  // checked, and the listing that catches a concurrent push of other content (two pushers could
  // both have passed the first check; the loser says so).
  const written = stored;
  await Promise.all([
    (options.readBack ?? true)
      ? verifyStored(storage, key, written.sizeBytes, written.sha256, retry)
      : undefined,
    checkExisting(),
  ]);
  return { ...base, outcome: 'stored', sizeBytes: stored.sizeBytes };
}

/**
 * Reads (and, up to {@link IN_MEMORY_MAX_BYTES}, compresses) the file, checks its header against
 * its name and the local pg_control, and binds the cluster name to its system identifier.
 */
async function readAndCheck(options: WalPushOptions, wal: WalFileName, retry: RetryPolicy) {
  const inMemory = await oneAtATime(() =>
    readCompressed(options.path, options.zstdLevel ?? DEFAULT_ZSTD_LEVEL),
  );
  const facts = inMemory
    ? checkFacts(options.path, wal, inMemory.sha256, inMemory.sizeBytes, inMemory.head)
    : await inspect(options.path, wal);
  const dataDir = options.dataDir ?? defaultDataDir(options.path);
  const local = dataDir === undefined ? undefined : await localSystemIdentifier(dataDir);
  if (facts.header && local !== undefined && facts.header.systemIdentifier !== local) {
    throw new ForeignWalError(
      `WAL segment ${options.path} was written by system identifier ${facts.header.systemIdentifier}, ` +
        `but the data directory ${dataDir} is system ${local}: refusing WAL of another cluster`,
    );
  }
  const systemIdentifier = facts.header?.systemIdentifier ?? local;
  if (systemIdentifier !== undefined) {
    await ensureClusterIdentity(options.storage, options.cluster, systemIdentifier, retry, options.cacheDir);
  }
  return { inMemory, facts, systemIdentifier };
}
