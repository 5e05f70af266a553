/**
 * Pushing one WAL file (segment, `.partial`, `.history` or backup history file) into the
 * repository under PostgreSQL's archive_command contract (DESIGN.md, "WAL contract"):
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
import { compressBuffer, storeBuffer, storeObject } from '../object-store.ts';
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
 * WAL files up to this size are pushed from memory: read once, hashed on this thread while zstd
 * compresses the same bytes on the thread pool. A default 16 MiB segment is; the rare larger
 * `wal_segment_size` (up to 1 GiB) is streamed, so memory stays bounded.
 */
const IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Segment-sized buffers kept between pushes, for the agent, which pushes one segment after
 * another: a fresh 16 MiB buffer costs ~10-20 ms of page faults at every push here, and churns
 * the garbage collector's accounting of external memory.
 */
const spareBuffers: Buffer[] = [];
const MAX_SPARE_BUFFERS = 4;

/** A file's bytes in a pooled buffer; `release` returns the buffer once nothing reads it any more. */
interface HeldFile {
  readonly data: Buffer;
  release(): void;
}

/** The file's bytes when it is small enough to push from memory; undefined when it is larger. */
async function readIfSmall(path: string): Promise<HeldFile | undefined> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    if (size > IN_MEMORY_MAX_BYTES) return undefined;
    const spare = spareBuffers.findIndex((b) => b.length >= size);
    const buffer = spare >= 0 ? (spareBuffers.splice(spare, 1)[0] as Buffer) : Buffer.allocUnsafe(size);
    const release = () => {
      if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buffer);
    };
    try {
      // One read into one buffer: FileHandle.readFile reads in 512 KiB steps, ~8x slower for 16 MiB.
      let filled = 0;
      while (filled < size) {
        const { bytesRead } = await handle.read(buffer, filled, size - filled, filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      return { data: buffer.subarray(0, filled), release };
    } catch (error) {
      release();
      throw error;
    }
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
  const read = async (): Promise<string | undefined> => {
    try {
      const body = await storage.get(key);
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      return (JSON.parse(Buffer.concat(chunks).toString('utf8')) as ClusterIdentity).systemIdentifier;
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
  };
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

/** Pushes one WAL file; see the module comment for the contract. */
export async function pushWalFile(options: WalPushOptions): Promise<WalPushResult> {
  const wal = mustParseWalFileName(basename(options.path));
  const held = await readIfSmall(options.path);
  // Compression starts on the thread pool now; this thread hashes the same bytes meanwhile.
  const compressed = held && compressBuffer(held.data, options.zstdLevel);
  try {
    return await push(options, wal, held?.data, compressed);
  } finally {
    // The buffer is reused only once the compression (not awaited when the file was already stored) let go of it.
    await compressed?.catch(() => undefined);
    held?.release();
  }
}

async function push(
  options: WalPushOptions,
  wal: WalFileName,
  data: Buffer | undefined,
  compressed: Promise<Buffer> | undefined,
): Promise<WalPushResult> {
  const { storage, cluster } = options;
  const retry = options.retry ?? DEFAULT_RETRY_POLICY;
  const facts = data
    ? checkFacts(
        options.path,
        wal,
        createHash('sha256').update(data).digest('hex'),
        data.length,
        data.subarray(0, WAL_LONG_HEADER_BYTES),
      )
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
    const level = options.zstdLevel === undefined ? {} : { zstdLevel: options.zstdLevel };
    stored = await withRetry(`storing ${key}`, retry, () =>
      data && compressed
        ? storeBuffer({
            storage,
            key,
            plaintext: data,
            plaintextSha256: facts.sha256,
            compressed,
            recipients: options.recipients,
            ifAbsent: true,
          })
        : storeObject({
            storage,
            key,
            source: createReadStream(options.path, { highWaterMark: 1024 * 1024 }),
            recipients: options.recipients,
            ifAbsent: true,
            ...level,
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
