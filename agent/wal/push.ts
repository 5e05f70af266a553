/**
 * Pushing one WAL file (segment, `.partial`, `.history` or backup history file) into the
 * repository under PostgreSQL's archive_command contract (docs/physical.md, "The WAL contract"):
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
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, zstdCompressSync } from 'node:zlib';
import { DEFAULT_ZSTD_LEVEL } from '../../core/codec.ts';
import {
  clusterIdentityKey,
  parseWalKey,
  WAL_HASH_PREFIX_HEX,
  walFilePrefix,
  walKey,
} from '../../core/keys.ts';
import {
  mustParseWalFileName,
  type WalFileName,
  walSegmentFileNameFromNumber,
} from '../../core/wal-names.ts';
import {
  parsePgControlSystemIdentifier,
  parseWalSegmentHeader,
  WAL_LONG_HEADER_BYTES,
  type WalSegmentHeader,
} from '../../core/wal-segment-header.ts';
import { ObjectExistsError, ObjectNotFoundError, type Storage } from '../../storage/storage.ts';
import { storeCompressed, storeObject } from '../object-store.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from './retry.ts';

/** The repository already holds this WAL file name with other content. */
export class WalConflictError extends Error {
  override name = 'WalConflictError';
}

/** The WAL file belongs to another PostgreSQL cluster than the repository's (or the local one). */
export class ForeignWalError extends Error {
  override name = 'ForeignWalError';
}

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

interface LocalFacts {
  readonly wal: WalFileName;
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly header?: WalSegmentHeader;
}

/**
 * WAL files up to this size are compressed in memory (a default 16 MiB segment compresses to
 * 0.5-2 MiB); the rare larger `wal_segment_size` (up to 1 GiB) is streamed, so memory stays bounded.
 */
const IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024;

/** The piece a WAL file is read, hashed and compressed in: small enough to stay in the CPU's cache. */
const PIECE_BYTES = 1024 * 1024;

/** A WAL file read once: its facts, and its bytes compressed. */
interface CompressedWal {
  readonly sha256: string;
  readonly sizeBytes: number;
  /** The first bytes, for the segment header. */
  readonly head: Buffer;
  readonly compressed: Buffer;
}

/**
 * Reads a WAL file of up to {@link IN_MEMORY_MAX_BYTES} in 1 MiB pieces through one reused buffer,
 * hashing and compressing each piece while it is in the CPU cache, each piece its own zstd frame
 * (a zstd stream is one or more frames; every decoder reads them in order). Undefined for a larger
 * file. Measured on 16 MiB segments of this 2-core machine: ~28 ms a segment on one core, against
 * ~45-60 ms for reading the whole file into one buffer and hashing it on this thread while the
 * thread pool compresses it, which fought over memory bandwidth and paid a fresh 16 MiB of page
 * faults per push; the frames cost <0.5% of compression ratio.
 */
async function readCompressed(path: string, level: number): Promise<CompressedWal | undefined> {
  const handle = await open(path, 'r');
  try {
    if ((await handle.stat()).size > IN_MEMORY_MAX_BYTES) return undefined;
    const hash = createHash('sha256');
    const piece = Buffer.allocUnsafe(PIECE_BYTES);
    const frames: Buffer[] = [];
    const params = { [zlibConstants.ZSTD_c_compressionLevel]: level };
    let head = Buffer.alloc(0);
    let sizeBytes = 0;
    for (;;) {
      const { bytesRead } = await handle.read(piece, 0, PIECE_BYTES, sizeBytes);
      if (bytesRead === 0) break;
      const chunk = piece.subarray(0, bytesRead);
      if (head.length < WAL_LONG_HEADER_BYTES)
        head = Buffer.concat([head, chunk.subarray(0, WAL_LONG_HEADER_BYTES - head.length)]);
      hash.update(chunk);
      frames.push(zstdCompressSync(chunk, { params }));
      sizeBytes += bytesRead;
    }
    // An empty file is still one (empty) frame: an object is never zero bytes of zstd.
    if (frames.length === 0) frames.push(zstdCompressSync(Buffer.alloc(0), { params }));
    return { sha256: hash.digest('hex'), sizeBytes, head, compressed: Buffer.concat(frames) };
  } finally {
    await handle.close();
  }
}

/** Streams the file once: its sha256, size and (for segments) the page header. */
async function inspect(path: string, wal: WalFileName): Promise<LocalFacts> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  let head = Buffer.alloc(0);
  await pipeline(
    createReadStream(path, { highWaterMark: 1024 * 1024 }),
    async (chunks: AsyncIterable<Buffer>) => {
      for await (const chunk of chunks) {
        if (head.length < WAL_LONG_HEADER_BYTES)
          head = Buffer.concat([head, chunk.subarray(0, WAL_LONG_HEADER_BYTES)]);
        hash.update(chunk);
        sizeBytes += chunk.length;
      }
    },
  );
  return checkFacts(path, wal, hash.digest('hex'), sizeBytes, head);
}

/** The facts of a WAL file, after checking that a segment's header agrees with its name and size. */
function checkFacts(
  path: string,
  wal: WalFileName,
  sha256: string,
  sizeBytes: number,
  head: Buffer,
): LocalFacts {
  const facts = { wal, sha256, sizeBytes };
  if (wal.kind !== 'segment' && wal.kind !== 'partial') return facts;
  const header = parseWalSegmentHeader(head, path);
  if (wal.kind === 'segment' && sizeBytes !== header.segmentSizeBytes) {
    throw new Error(
      `WAL segment ${path} is ${sizeBytes} bytes but its header says segments are ${header.segmentSizeBytes} bytes: ` +
        'the file is truncated or not a complete segment; PostgreSQL only archives complete segments',
    );
  }
  const segNo = Number(header.pageAddress / BigInt(header.segmentSizeBytes));
  const expected = walSegmentFileNameFromNumber(wal.timeline, segNo, header.segmentSizeBytes);
  if (expected !== wal.name.slice(0, 24)) {
    throw new Error(
      `WAL file ${path} holds the segment that starts at byte ${header.pageAddress} (${expected}), not ${wal.name}: ` +
        'the file was renamed or copied over; refusing to store it under the wrong name',
    );
  }
  return { ...facts, header };
}

/** The system identifier in `<dataDir>/global/pg_control`, or undefined when it cannot be read. */
export async function localSystemIdentifier(dataDir: string): Promise<string | undefined> {
  const file = join(dataDir, 'global', 'pg_control');
  try {
    const handle = await open(file, 'r');
    try {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(8), 0, 8, 0);
      return parsePgControlSystemIdentifier(buffer.subarray(0, bytesRead), file);
    } finally {
      await handle.close();
    }
  } catch {
    return undefined;
  }
}

function defaultDataDir(path: string): string | undefined {
  const abs = resolve(path);
  return basename(dirname(abs)) === 'pg_wal' ? dirname(dirname(abs)) : undefined;
}

interface ClusterIdentity {
  readonly cluster: string;
  readonly systemIdentifier: string;
  readonly createdAt: string;
}

/** The system identifier the cluster name is bound to, or undefined while no WAL was ever pushed under it. */
export async function readClusterIdentity(storage: Storage, cluster: string): Promise<string | undefined> {
  try {
    const body = await storage.get(clusterIdentityKey(cluster));
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    return (JSON.parse(Buffer.concat(chunks).toString('utf8')) as ClusterIdentity).systemIdentifier;
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

/**
 * Binds the cluster name to `systemIdentifier` in the repository the first time, and refuses a
 * different identifier after that.
 */
export async function ensureClusterIdentity(
  storage: Storage,
  cluster: string,
  systemIdentifier: string,
  retry: RetryPolicy,
  cacheDir?: string,
): Promise<void> {
  const cacheFile = cacheDir && join(cacheDir, `system-identifier-${cluster}`);
  if (cacheFile) {
    const cached = await readFile(cacheFile, 'utf8').catch(() => undefined);
    if (cached?.trim() === systemIdentifier) return;
  }
  const key = clusterIdentityKey(cluster);
  const read = () => readClusterIdentity(storage, cluster);
  let stored = await withRetry(`reading ${key}`, retry, read);
  if (stored === undefined) {
    const identity: ClusterIdentity = { cluster, systemIdentifier, createdAt: new Date().toISOString() };
    const { Readable } = await import('node:stream');
    await withRetry(`writing ${key}`, retry, async () => {
      try {
        await storage.put(key, Readable.from([Buffer.from(`${JSON.stringify(identity, null, 2)}\n`)]), {
          ifAbsent: true,
        });
      } catch (error) {
        if (!(error instanceof ObjectExistsError)) throw error;
      }
    });
    stored = await withRetry(`reading ${key}`, retry, read);
  }
  if (stored !== systemIdentifier) {
    throw new ForeignWalError(
      `WAL of system identifier ${systemIdentifier} cannot go to cluster "${cluster}" in ${storage.displayUrl}: ` +
        `that cluster name belongs to system identifier ${stored}. Use another cluster name for this PostgreSQL ` +
        'cluster (config "cluster" or PGKEEP_CLUSTER)',
    );
  }
  if (cacheFile) {
    // Only a cache: a spool this user cannot write costs one GET per push, not a failed push.
    const { mkdir, writeFile, rename } = await import('node:fs/promises');
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    await mkdir(cacheDir, { recursive: true, mode: 0o700 })
      .then(() => writeFile(tmp, systemIdentifier))
      .then(() => rename(tmp, cacheFile))
      .catch(() => undefined);
  }
}

/** The stored versions (hash prefixes) of a WAL file name. */
export async function storedWalVersions(
  storage: Storage,
  cluster: string,
  walFileName: string,
): Promise<{ key: string; hashPrefix: string; sizeBytes: number }[]> {
  const versions: { key: string; hashPrefix: string; sizeBytes: number }[] = [];
  for await (const info of storage.list(walFilePrefix(cluster, walFileName))) {
    const parsed = parseWalKey(info.key);
    if (parsed?.walFileName === walFileName) {
      versions.push({ key: info.key, hashPrefix: parsed.hashPrefix, sizeBytes: info.sizeBytes });
    }
  }
  return versions;
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
    await ensureClusterIdentity(storage, cluster, systemIdentifier, retry, options.cacheDir);
  }

  const key = walKey(cluster, wal.name, facts.sha256);
  const ourPrefix = facts.sha256.slice(0, WAL_HASH_PREFIX_HEX);
  const base = {
    walFileName: wal.name,
    key,
    plaintextSha256: facts.sha256,
    plaintextSizeBytes: facts.sizeBytes,
    ...(systemIdentifier === undefined ? {} : { systemIdentifier }),
  };
  const checkExisting = async (): Promise<'absent' | 'same'> => {
    const versions = await withRetry(`listing ${walFilePrefix(cluster, wal.name)}`, retry, () =>
      storedWalVersions(storage, cluster, wal.name),
    );
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

  if ((await checkExisting()) === 'same') return { ...base, outcome: 'already-stored' };

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
  if (options.readBack ?? true) await verifyStored(storage, key, stored.sizeBytes, stored.sha256, retry);
  // Two pushers of different content could both have passed the first check; the loser says so.
  await checkExisting();
  return { ...base, outcome: 'stored', sizeBytes: stored.sizeBytes };
}

/** Reads `key` back and checks its size and sha256 against what was written. */
export async function verifyStored(
  storage: Storage,
  key: string,
  sizeBytes: number,
  sha256: string,
  retry: RetryPolicy,
): Promise<void> {
  await withRetry(`reading back ${key}`, retry, async () => {
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of await storage.get(key)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const digest = hash.digest('hex');
    if (size !== sizeBytes || digest !== sha256) {
      throw new Error(
        `${key} reads back as ${size} bytes with sha256 ${digest}, but ${sizeBytes} bytes with sha256 ${sha256} ` +
          `were written: ${storage.displayUrl} did not store the object intact`,
      );
    }
  });
}

/** sha256 and size of a file, streamed. */
export async function sha256OfFile(path: string): Promise<{ sha256: string; sizeBytes: number }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), sizeBytes };
}
