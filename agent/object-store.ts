/**
 * Writing and reading one repository object through the data path of docs/architecture.md ("The data path of a backup"):
 * plaintext -> sha256 -> zstd -> age -> sha256 -> storage, and back.
 */
import { createHash } from 'node:crypto';
import { type Duplex, Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdDecompress } from 'node:zlib';
import { AgeDecryptError, decryptStream, encryptBuffer, encryptStream } from '../core/age-stream.ts';
import { DEFAULT_ZSTD_LEVEL } from '../core/codec.ts';
import { HashingStream } from '../core/hashing-stream.ts';
import type { PutOptions, Storage } from '../storage/storage.ts';
import { youngGcEvery } from './young-gc.ts';

/** What was stored: the manifest's per-object facts. */
export interface StoredObject {
  readonly key: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly plaintextSizeBytes: number;
  /**
   * Only WAL, whose key carries a prefix of it (a re-push of the same content is found by listing).
   * Streams are not hashed in plaintext: age's STREAM already authenticates every chunk and the
   * end, the ciphertext's sha256 is in the manifest, and a plaintext hash in a readable manifest
   * would let anyone confirm a guessed plaintext. Measured in docs/performance.md.
   */
  readonly plaintextSha256?: string;
}

/**
 * Every object the agent stores is new: it never replaces a key, and the ingest bucket policy
 * refuses a host's write without `If-None-Match: *`, which create-only puts send.
 */
const CREATE_ONLY: PutOptions = { ifAbsent: true };

export interface StoreObjectOptions {
  readonly storage: Storage;
  readonly key: string;
  readonly source: Readable;
  readonly recipients: readonly string[];
  /** zstd level. @default {@link DEFAULT_ZSTD_LEVEL} */
  readonly zstdLevel?: number;
  /** The `zstd` program to compress with; `null` for Node's built-in zstd. @default - `zstd` on PATH if any */
  readonly zstdProgram?: string | null;
  /** Sees every plaintext byte, e.g. to report progress. */
  readonly onProgress?: (plaintextBytes: number) => void;
}

/**
 * Compresses, encrypts and stores `source` at `key`, create-only (ObjectExistsError if the
 * key exists). Resolves only once the object is durably stored; if the source or the write fails,
 * nothing is left at `key` (the driver's contract).
 */
export async function storeObject(options: StoreObjectOptions): Promise<StoredObject> {
  const scavenge = youngGcEvery();
  let reported = 0;
  const plaintext = new HashingStream({
    hash: false,
    onProgress: (bytes) => {
      scavenge(bytes - reported);
      reported = bytes;
      options.onProgress?.(bytes);
    },
  });
  const ciphertext = new HashingStream();
  const encrypt = await encryptStream(options.recipients);
  // Started last, right before the pipeline takes it, so a zstd that fails at once is reported.
  // Imported here: it brings node:child_process, which archive_command's WAL path never needs.
  const { zstdCompress } = await import('./zstd-compress.ts');
  const compress = zstdCompress(options.zstdLevel ?? DEFAULT_ZSTD_LEVEL, options.zstdProgram);
  await pipeIntoStorage(options.storage, options.key, [
    options.source,
    plaintext,
    compress,
    encrypt,
    ciphertext,
  ]);
  return {
    key: options.key,
    sizeBytes: ciphertext.sizeBytes,
    sha256: ciphertext.sha256,
    plaintextSizeBytes: plaintext.sizeBytes,
  };
}

/**
 * Runs `stages` while the storage driver reads the last one as the object's body, create-only.
 * The driver gets that stream itself: wrapping it in an async iterator and `Readable.from`, as a
 * pipeline's last function stage would, costs a promise and two stream hops per chunk, a
 * measurable share of the agent's CPU on a dump (docs/performance.md). An error anywhere destroys
 * every stage; the driver sees its body fail and removes whatever it had begun, and this resolves
 * or rejects only once both sides have settled, so nothing is left half-written behind it.
 */
async function pipeIntoStorage(
  storage: Storage,
  key: string,
  stages: [Readable, ...Duplex[]],
  signal?: AbortSignal,
): Promise<void> {
  const body = stages[stages.length - 1] as Readable;
  const produced = pipeline(stages, ...(signal ? [{ signal }] : []));
  const stored = storage.put(key, body, CREATE_ONLY).catch((error: unknown) => {
    // A driver that gave up without reading to the end must not leave the stages blocked.
    body.destroy(error as Error);
    throw error;
  });
  const [production, storing] = await Promise.allSettled([produced, stored]);
  // The first failure is the cause: a driver's refusal shows up in the pipeline only as a
  // premature close of its body, a failed stage reaches the driver as its body's error.
  if (storing.status === 'rejected') {
    if (production.status === 'fulfilled' || isPrematureClose(production.reason)) throw storing.reason;
  }
  if (production.status === 'rejected') throw production.reason;
  if (storing.status === 'rejected') throw storing.reason;
}

function isPrematureClose(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE';
}

export interface StoreProducedOptions
  extends Omit<StoreObjectOptions, 'source' | 'zstdProgram' | 'onProgress'> {
  /** Starts the program that writes the plaintext: into `stdout` (zstd's stdin), or into a pipe. */
  readonly produce: {
    /** `done` resolves when the producer exited 0 and rejects with why otherwise. */
    into(stdout: Writable): { readonly done: Promise<void>; stop(): void };
    /** Without a zstd program: the producer's checked output, which fails if the producer fails. */
    pipe(): Readable;
  };
  /** Sees every stored (compressed, encrypted) byte, e.g. to report progress. */
  readonly onStoredBytes?: (storedBytes: number) => void;
  /** Stops the producer and fails the store (nothing left at `key`). */
  readonly signal?: AbortSignal;
  /**
   * The object is completed only once this resolves, and not at all if it rejects (the store then
   * fails with its reason, nothing left at `key`): for an object that must not exist without
   * others. The data is written meanwhile; only the end waits. @default - no wait
   */
  readonly completeAfter?: Promise<unknown>;
}

/**
 * {@link storeObject} for the output of a program (pg_dump): where the host has `zstd`, the
 * program writes straight into zstd's stdin, so the plaintext never passes through this process;
 * zstd reports how much it read. Same format, same guarantees: the object is complete only if the
 * producer and zstd both exited 0.
 */
export async function storeProduced(options: StoreProducedOptions): Promise<StoredObject> {
  const { zstdChild, zstdProgram } = await import('./zstd-compress.ts');
  const program = zstdProgram();
  const gate = options.completeAfter;
  // Rejected early, it is reported when the stream would end; until then it is not unhandled.
  gate?.catch(() => {});
  if (program === null) {
    const produced = options.produce.pipe();
    const source = gate ? produced.pipe(endsAfter(gate)) : produced;
    if (gate) {
      // pipe() passes neither a failure forward nor a stop back: the producer's output, destroyed,
      // stops the producer.
      produced.once('error', (error) => source.destroy(error));
      source.once('close', () => produced.destroy());
    }
    const stop = () => produced.destroy(options.signal?.reason as Error);
    options.signal?.addEventListener('abort', stop, { once: true });
    try {
      return await storeObject({ ...options, source });
    } finally {
      options.signal?.removeEventListener('abort', stop);
    }
  }
  options.signal?.throwIfAborted();
  const scavenge = youngGcEvery();
  let reported = 0;
  const ciphertext = new HashingStream({
    onProgress: (bytes) => {
      scavenge(bytes - reported);
      reported = bytes;
      options.onStoredBytes?.(bytes);
    },
  });
  const encrypt = await encryptStream(options.recipients);
  const zstd = zstdChild(options.zstdLevel ?? DEFAULT_ZSTD_LEVEL, program);
  const producer = options.produce.into(zstd.stdin);
  zstd.release();
  producer.done.catch(() => {});
  // zstd ends when the producer closes its stdout, crashed or not: the object is complete only
  // once the producer is known to have exited 0.
  zstd.endsAfter(gate ? Promise.all([producer.done, gate]).then(() => {}) : producer.done);
  const stop = () => producer.stop();
  options.signal?.addEventListener('abort', stop, { once: true });
  try {
    await pipeIntoStorage(options.storage, options.key, [zstd.output, encrypt, ciphertext], options.signal);
  } finally {
    options.signal?.removeEventListener('abort', stop);
    producer.stop();
  }
  return {
    key: options.key,
    sizeBytes: ciphertext.sizeBytes,
    sha256: ciphertext.sha256,
    plaintextSizeBytes: zstd.plaintextSizeBytes(),
  };
}

/** A pass-through that ends only once `gate` resolved, and fails with its reason otherwise. */
function endsAfter(gate: Promise<unknown>): Transform {
  return new Transform({
    transform: (chunk: Buffer, _encoding, callback) => callback(null, chunk),
    flush: (callback) => {
      gate.then(() => callback(), callback);
    },
  });
}

export interface StoreCompressedOptions {
  readonly storage: Storage;
  readonly key: string;
  /** The plaintext already compressed (zstd), and the plaintext's facts. */
  readonly compressed: Buffer;
  readonly plaintextSha256: string;
  readonly plaintextSizeBytes: number;
  readonly recipients: readonly string[];
}

/**
 * {@link storeObject} for data its caller has already compressed in memory (a WAL segment): one
 * encryption and one write of the whole object. Same format, same guarantees.
 */
export async function storeCompressed(options: StoreCompressedOptions): Promise<StoredObject> {
  const ciphertext = encryptBuffer(options.recipients, options.compressed);
  await options.storage.put(options.key, Readable.from([ciphertext], { objectMode: false }), CREATE_ONLY);
  return {
    key: options.key,
    sizeBytes: ciphertext.length,
    sha256: createHash('sha256').update(ciphertext).digest('hex'),
    plaintextSizeBytes: options.plaintextSizeBytes,
    plaintextSha256: options.plaintextSha256,
  };
}

/** A stored object failed its checks: corrupted, truncated, or not decryptable with the identities given. */
export class ObjectIntegrityError extends Error {
  override name = 'ObjectIntegrityError';
  readonly key: string;
  constructor(key: string, detail: string, options?: ErrorOptions) {
    super(`object ${key} failed verification: ${detail}`, options);
    this.key = key;
  }
}

export interface OpenObjectOptions {
  readonly storage: Storage;
  readonly key: string;
  readonly identities: readonly string[];
  /** The manifest's facts; when given, the ciphertext and plaintext are checked against them. */
  readonly expected?: Pick<StoredObject, 'sizeBytes' | 'sha256'> &
    Partial<Pick<StoredObject, 'plaintextSizeBytes' | 'plaintextSha256'>>;
}

/**
 * The checking, decrypting, decompressing stages for reading `key`. Every failure (a flipped byte, truncation, wrong identity, size or hash other than the
 * manifest's) errors the stream with {@link ObjectIntegrityError} naming the key, and does so
 * before the stream ends, so a consumer never mistakes a damaged object for a complete one.
 */
export function readStages(options: Omit<OpenObjectOptions, 'storage'>): Transform[] {
  const { key, expected } = options;
  const mismatch = (what: string) => (detail: string) => new ObjectIntegrityError(key, `${what}: ${detail}`);
  const scavenge = youngGcEvery();
  let seen = 0;
  const stages: Transform[] = [
    new HashingStream({
      // Without a manifest's hash to compare (a WAL segment: its key names its plaintext's hash),
      // a digest of the ciphertext would be computed for nothing.
      hash: expected?.sha256 !== undefined,
      onProgress: (bytes) => {
        scavenge(bytes - seen);
        seen = bytes;
      },
      expected: expected && {
        sizeBytes: expected.sizeBytes,
        sha256: expected.sha256,
        onMismatch: mismatch('stored bytes'),
      },
    }),
    decryptStream(options.identities),
    // zlib's default 16 KiB output chunks make decompression ~5x slower (measured on 16 MiB WAL
    // segments: ~100 ms vs ~15 ms); 1 MiB chunks keep memory bounded all the same.
    createZstdDecompress({ chunkSize: 1024 * 1024 }),
  ];
  // Manifests written before streams stopped hashing their plaintext still carry its sha256.
  if (expected?.plaintextSizeBytes !== undefined) {
    stages.push(
      new HashingStream({
        expected: {
          sizeBytes: expected.plaintextSizeBytes,
          sha256: expected.plaintextSha256,
          onMismatch: mismatch('plaintext'),
        },
      }),
    );
  }
  return stages;
}

/** Names the object in a failure that came from its bytes (age or zstd), keeping the cause. */
export function asIntegrityError(key: string, error: unknown): unknown {
  if (error instanceof AgeDecryptError) return new ObjectIntegrityError(key, error.message, { cause: error });
  if (error instanceof Error && 'code' in error && /^(Z_|ERR_ZSTD|ZSTD_)/.test(String(error.code))) {
    return new ObjectIntegrityError(key, `invalid zstd data (${error.message})`, { cause: error });
  }
  return error;
}

/** Streams the plaintext of `key` into `destination` with every check of {@link readStages}. */
export async function restoreObject(
  options: OpenObjectOptions,
  destination: NodeJS.WritableStream,
): Promise<void> {
  const source = await options.storage.get(options.key);
  try {
    await pipeline([source, ...readStages(options), destination]);
  } catch (error) {
    throw asIntegrityError(options.key, error);
  }
}
