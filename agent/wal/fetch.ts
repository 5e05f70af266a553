/**
 * Fetching one WAL file for PostgreSQL's restore_command (its exit codes are tabled in docs/physical.md):
 *
 * - "missing" only when the repository answered and holds no version of the name; PostgreSQL then
 *   ends recovery (or, in standby, tries streaming), so a transient failure must never look like
 *   this: it is retried until the policy's deadline and then rejects with StorageUnavailableError;
 * - the destination (`%p`) appears atomically (temp file, fsync, rename) and only with content
 *   whose plaintext hash matches the key, decrypted and decompressed with every check of
 *   object-store's readStages;
 * - two stored versions of one name (which wal-push refuses to create) reject: picking one could
 *   replay the wrong history.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Storage } from '../../storage/storage.ts';
import { ObjectIntegrityError, readStages } from '../object-store.ts';
import { youngGcEvery } from '../young-gc.ts';
import { storedWalVersions } from './push.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from './retry.ts';

export interface WalFetchOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly identities: readonly string[];
  readonly walFileName: string;
  /** Where to write the file (`%p`). */
  readonly destination: string;
  readonly retry?: RetryPolicy;
  readonly signal?: AbortSignal;
  /**
   * Whether the file is flushed to disk before it is renamed into place. @default true. The
   * prefetcher passes false for its spool: see {@link writeAtomically}.
   */
  readonly durable?: boolean;
  /** Called once the repository is known to hold the file, before it is downloaded. */
  readonly onFound?: () => Promise<void>;
}

export type WalFetchOutcome = 'fetched' | 'missing';

/** A WAL file name with more than one stored version. */
export class AmbiguousWalError extends Error {
  override name = 'AmbiguousWalError';
}

/** Fetches one WAL file; see the module comment for the contract. */
export async function fetchWalFile(options: WalFetchOptions): Promise<WalFetchOutcome> {
  const { storage, cluster, walFileName } = options;
  const retry = options.retry ?? DEFAULT_RETRY_POLICY;
  const versions = await withRetry(
    `listing ${walFileName}`,
    retry,
    () => storedWalVersions(storage, cluster, walFileName),
    options.signal,
  );
  if (versions.length === 0) return 'missing';
  if (versions.length > 1) {
    throw new AmbiguousWalError(
      `WAL file ${walFileName} has ${versions.length} stored versions (${versions.map((v) => v.key).join(', ')}): ` +
        'two clusters archived under one cluster name; restore needs a repository with one history',
    );
  }
  const version = versions[0]!;
  await options.onFound?.();
  await withRetry(
    `fetching ${version.key}`,
    retry,
    () =>
      writeAtomically(options.destination, storage, version.key, version.hashPrefix, options.identities, {
        durable: options.durable ?? true,
      }),
    options.signal,
  );
  return 'fetched';
}

/** Checks that the plaintext's sha256 starts with the key's hash prefix. */
class PlaintextPrefixCheck extends Transform {
  readonly #hash = createHash('sha256');
  /**
   * The plaintext arrives as fresh 1 MiB buffers outside V8's heap (16 per segment); left to V8,
   * they pile up until a full collection, which measured ~8 ms per segment. A scavenge every
   * few MiB frees them for a fraction of that.
   */
  readonly #scavenge = youngGcEvery(4 * 1024 * 1024);
  readonly #key: string;
  readonly #prefix: string;
  constructor(key: string, prefix: string) {
    super();
    this.#key = key;
    this.#prefix = prefix;
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.#scavenge(chunk.length);
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    const digest = this.#hash.digest('hex');
    if (!digest.startsWith(this.#prefix)) {
      callback(new ObjectIntegrityError(this.#key, `plaintext sha256 ${digest} does not match the key`));
    } else {
      callback();
    }
  }
}

/** The temp file through which process `pid` writes `destination`. */
export function tempPathFor(destination: string, pid: number = process.pid): string {
  return `${destination}.pgkeep-${pid}.tmp`;
}

/**
 * Streams the plaintext of `key` into `destination` through a temp file and a rename, so the
 * destination appears only complete and verified. With `durable` (the default) the file and its
 * directory are fsynced too.
 */
export async function writeAtomically(
  destination: string,
  storage: Storage,
  key: string,
  hashPrefix: string,
  identities: readonly string[],
  options: { durable?: boolean } = {},
): Promise<void> {
  const tmp = tempPathFor(destination);
  try {
    const source = await storage.get(key);
    await pipeline([
      source,
      ...readStages({ key, identities }),
      new PlaintextPrefixCheck(key, hashPrefix),
      createWriteStream(tmp),
    ]);
    if (options.durable ?? true) {
      const handle = await open(tmp, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await rename(tmp, destination);
    if (options.durable ?? true) await fsyncDir(dirname(destination));
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
