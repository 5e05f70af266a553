/**
 * A real S3-compatible server (s3rver 3.7.1) on 127.0.0.1 for integration tests, run as a child
 * process so tests can SIGKILL it ("provider down", "killed mid-copy") and start it again on the
 * same port and directory.
 *
 * What stock s3rver 3.7.1 does and does not do (checked against @aws-sdk/client-s3 3.1169):
 * - PutObject, GetObject (with Range; a range past the end is 416 InvalidRange), HeadObject,
 *   DeleteObject, ListObjectsV2 with pagination, CreateMultipartUpload, UploadPart and
 *   CompleteMultipartUpload work.
 * - AbortMultipartUpload answers 405 MethodNotAllowed and ListMultipartUploads 501 NotImplemented:
 *   this wrapper implements both on top of s3rver's own upload directory, because lib-storage
 *   aborts on every failed upload and tests must prove nothing is left open.
 * - `If-None-Match: *` on PUT is ignored (the object is overwritten). With
 *   `conditionalWrites: true` this wrapper honours it (412 PreconditionFailed) on PutObject and
 *   CompleteMultipartUpload, like AWS S3, R2 and MinIO; by default it behaves like stock s3rver,
 *   like providers without conditional writes. With `createOnlyPolicy: true` it also refuses, as
 *   the ingest bucket policy refuses a host, any PutObject or CompleteMultipartUpload without
 *   `If-None-Match` and any SSE-C upload (403 AccessDenied).
 * - Stock s3rver writes a PUT straight into the final file, so a client that dies mid-request
 *   leaves a truncated object behind; real S3 never does. This wrapper writes to a temp file and
 *   renames it only when the whole body arrived.
 * - Stock s3rver ignores Content-MD5 on PutObject; this wrapper refuses a body that does not match
 *   it (400 BadDigest) and stores nothing, as S3 does.
 * - Checksums: stock s3rver ignores `x-amz-checksum-*` headers and does not decode `aws-chunked`
 *   bodies; with the SDK's default `requestChecksumCalculation: WHEN_SUPPORTED` a *streamed*
 *   PutObject body is stored with its chunk framing and CRC trailer (corrupt). Buffer bodies (all
 *   that lib-storage sends) are stored intact either way. Use `WHEN_REQUIRED`.
 * - ListObjectsV2 beyond one page (1,000 keys) fails with 500: its continuation tokens use DES,
 *   which Node 17+ (OpenSSL 3) lacks unless started with --openssl-legacy-provider (done here).
 * - A Range ending at byte 0 (`bytes=0-0`) returns the whole object; fixed here.
 * - ListObjects walks the directory in readdir order, so keys come back unsorted and a continuation
 *   token can skip keys; this wrapper walks in key (UTF-8 byte) order, as S3 lists.
 * - HEAD of a key in a missing bucket is a bare 404 (as on AWS): the SDK cannot tell it from a
 *   missing key without a GET.
 * - Credentials: access key `S3RVER`, secret `S3RVER` ({@link S3RVER_CREDENTIALS}); others get 403.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readdirSync, rmSync } from 'node:fs';
import { link, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createS3Client, S3Storage } from '../../storage/s3-storage.ts';

/** The only credentials s3rver accepts. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** Points the SDK's standard credential chain at s3rver's fixed keys (for this test process only). */
export function useS3rverCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
}

/**
 * An S3 driver for `bucket` (under `prefix`) at `endpoint` (an s3rver, or a fault proxy in front
 * of one), signed with s3rver's fixed key: what the pipeline's locations hold in the tests.
 */
export function s3rverStorage(endpoint: string, bucket: string, prefix = ''): S3Storage {
  const options = { bucket, prefix, endpoint, forcePathStyle: true, region: 'us-east-1' };
  const client = createS3Client(options);
  client.config.credentials = async () => S3RVER_CREDENTIALS;
  return new S3Storage(options, client);
}

export interface S3ServerOptions {
  /** Buckets created at start. @default - none */
  readonly buckets?: readonly string[];
  /** Honour `If-None-Match: *` on PUT and CompleteMultipartUpload. @default false - like stock s3rver */
  readonly conditionalWrites?: boolean;
  /**
   * Act as the ingest bucket policy does for a host: 403 AccessDenied for a PutObject or
   * CompleteMultipartUpload without `If-None-Match`, and for any SSE-C upload.
   * @default false
   */
  readonly createOnlyPolicy?: boolean;
  /** Data directory. @default - a fresh temp directory, removed by stop() */
  readonly directory?: string;
  /** Port on 127.0.0.1. @default - a free port */
  readonly port?: number;
}

export interface S3Server {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly port: number;
  readonly directory: string;
  /** Process id of the running server, `undefined` while it is down. */
  readonly pid: number | undefined;
  /** A pgkeep repository URL for `bucket` (and `prefix`) on this server. */
  url(bucket: string, prefix?: string): string;
  /** Kills the server (SIGKILL by default) and keeps its data: the endpoint refuses connections until restart(). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and directory. */
  restart(): Promise<void>;
  /** The next `count` requests fail with `status` (503 SlowDown or 500 InternalError). */
  failNextRequests(count: number, status?: 500 | 503): Promise<void>;
  /** Ids of multipart uploads still open in `bucket`, read from s3rver's directory (no API involved). */
  openUploads(bucket: string): Promise<string[]>;
  /** Stops the server and removes the directory if this helper created it. */
  stop(): Promise<void>;
}

const CHILD_FLAG = '--pgkeep-s3rver-child';

/** Starts s3rver in a child process on 127.0.0.1 and resolves once it accepts requests. */
export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const ownsDirectory = options.directory === undefined;
  const directory = options.directory ?? (await mkdtemp(path.join(tmpdir(), 'pgkeep-s3rver-')));
  await mkdir(directory, { recursive: true });
  const config: ChildConfig = {
    directory,
    removeDirectoryWhenOrphaned: ownsDirectory,
    port: options.port ?? 0,
    buckets: [...(options.buckets ?? [])],
    conditionalWrites: options.conditionalWrites ?? false,
    createOnlyPolicy: options.createOnlyPolicy ?? false,
  };
  let running: RunningChild | undefined;
  try {
    running = await spawnChild(config);
  } catch (error) {
    if (ownsDirectory) await rm(directory, { recursive: true, force: true });
    throw error;
  }
  const port = running.port;
  config.port = port;
  const endpoint = `http://127.0.0.1:${port}`;

  const server: S3Server = {
    endpoint,
    port,
    directory,
    get pid() {
      const child = running?.child;
      return child?.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    url(bucket, prefix = '') {
      return `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&path-style=true&region=us-east-1`;
    },
    async kill(signal = 'SIGKILL') {
      if (running) await terminate(running.child, signal);
      running = undefined;
    },
    async restart() {
      if (running) await terminate(running.child, 'SIGTERM');
      running = await spawnChild(config);
    },
    async failNextRequests(count, status = 503) {
      if (!running?.child.stdin) throw new Error('s3rver is not running: call restart() first');
      const acknowledged = running.nextLine();
      running.child.stdin.write(`${JSON.stringify({ fail: { count, status } })}\n`);
      await acknowledged;
    },
    async openUploads(bucket) {
      const uploads = path.join(directory, bucket, '._S3rver_uploads');
      if (!existsSync(uploads)) return [];
      return (await readdir(uploads)).sort();
    },
    async stop() {
      if (running) await terminate(running.child, 'SIGTERM');
      running = undefined;
      if (ownsDirectory) await rm(directory, { recursive: true, force: true });
    },
  };
  return server;
}

interface ChildConfig {
  directory: string;
  removeDirectoryWhenOrphaned: boolean;
  port: number;
  buckets: string[];
  conditionalWrites: boolean;
  createOnlyPolicy: boolean;
}

function nodeBinary(): string {
  // The system node may be too old to run .ts files; the repository pins Node 24.
  const pinned = fileURLToPath(new URL('../../node_modules/.bin/node', import.meta.url));
  return existsSync(pinned) ? pinned : process.execPath;
}

interface RunningChild {
  readonly child: ChildProcess;
  readonly port: number;
  /** The child's next line on stdout (its replies). */
  nextLine(): Promise<string>;
}

async function spawnChild(config: ChildConfig): Promise<RunningChild> {
  // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in its legacy provider.
  const args = [
    '--openssl-legacy-provider',
    fileURLToPath(import.meta.url),
    CHILD_FLAG,
    JSON.stringify(config),
  ];
  const child = spawn(nodeBinary(), args, {
    // stdin stays open as a lifeline: when this process dies, the child sees EOF and exits.
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
    if (process.env.PGKEEP_S3RVER_DEBUG === '1') process.stderr.write(chunk);
  });
  const waiting: Array<(line: string) => void> = [];
  const unread: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const waiter = waiting.shift();
    if (waiter) waiter(line);
    else unread.push(line);
  });
  const nextLine = () =>
    new Promise<string>((resolve) => {
      const line = unread.shift();
      if (line !== undefined) resolve(line);
      else waiting.push(resolve);
    });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('s3rver did not start within 20 s')), 20_000);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`s3rver exited at start (code ${code}, signal ${signal}): ${stderr}`));
      });
      nextLine().then((line) => {
        clearTimeout(timer);
        const message = JSON.parse(line) as { port?: number; error?: string };
        if (message.port) resolve(message.port);
        else reject(new Error(`s3rver failed to start: ${message.error}`));
      });
    });
    return { child, port, nextLine };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

async function terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Child process: s3rver plus the missing pieces described at the top of this file.

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | undefined>;
  headers: Record<string, string | undefined>;
  status: number;
  body: unknown;
  type: string;
}

async function runChild(config: ChildConfig): Promise<void> {
  const require = createRequire(import.meta.url);
  // Stock s3rver lists in readdir order (hash order on ext4), so ListObjects is unsorted and
  // continuation tokens skip keys. Walk in key order instead; filesystem.js picks up `walk` when
  // it is first required, so this must come before require('s3rver').
  const utils = require('s3rver/lib/utils');
  utils.walk = function* walk(dir: string, recurseFilter?: (dirPath: string) => boolean): Generator<string> {
    const entries = readdirSync(dir, { withFileTypes: true }).map((entry) => ({
      entry,
      // An object "k" is stored as "k._S3rver_object" and keys under "d/" in directory "d".
      sortKey: Buffer.from(entry.isDirectory() ? `${entry.name}/` : entry.name.replace(/\._S3rver_.*$/, '')),
    }));
    entries.sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));
    for (const { entry } of entries) {
      const child = path.posix.join(dir, entry.name);
      if (!entry.isDirectory()) yield child;
      else if (!recurseFilter || recurseFilter(child)) yield* walk(child, recurseFilter);
    }
  };
  const S3rver = require('s3rver');
  const S3Error = require('s3rver/lib/models/error');
  const FilesystemStore = require('s3rver/lib/stores/filesystem');
  const requestHeaders = new AsyncLocalStorage<Record<string, string | undefined>>();
  let failures = { count: 0, status: 503 };

  // Atomic, optionally conditional PUT: temp file + rename (or link, which fails if the key exists).
  FilesystemStore.prototype.putObject = async function putObject(object: {
    bucket: string;
    key: string;
    content: (NodeJS.ReadableStream & { complete?: boolean }) | Buffer;
    metadata: Record<string, string>;
  }) {
    const objectPath: string = this.getResourcePath(object.bucket, object.key, 'object');
    await mkdir(path.dirname(objectPath), { recursive: true });
    const temp = `${objectPath}.partial-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const md5 = createHash('md5');
    let size = 0;
    try {
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          md5.update(chunk);
          size += chunk.length;
          callback(null, chunk);
        },
      });
      const source = Buffer.isBuffer(object.content) ? [object.content] : object.content;
      await pipeline(source as NodeJS.ReadableStream, counter, createWriteStream(temp));
      // A request body cut short (client killed, connection dropped) must not become an object.
      if ('complete' in object.content && object.content.complete === false) {
        throw new S3Error('IncompleteBody', 'You did not provide the number of bytes specified');
      }
      // Like S3 and every provider: a body that does not match its Content-MD5 is refused, not stored.
      const contentMd5 = requestHeaders.getStore()?.['content-md5'];
      if (contentMd5 !== undefined && contentMd5 !== Buffer.from(md5.copy().digest()).toString('base64')) {
        throw new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.');
      }
      if (config.conditionalWrites && requestHeaders.getStore()?.['if-none-match'] === '*') {
        try {
          await link(temp, objectPath);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
            throw new S3Error(
              'PreconditionFailed',
              'At least one of the pre-conditions you specified did not hold',
              {
                Condition: 'If-None-Match',
              },
            );
          }
          throw error;
        }
        await unlink(temp);
      } else {
        await rename(temp, objectPath);
      }
    } finally {
      await rm(temp, { force: true });
    }
    const digest = md5.digest('hex');
    await this.putMetadata(object.bucket, object.key, object.metadata, digest);
    return { size, md5: digest };
  };

  // Stock getObject reads a range ending at byte 0 ("bytes=0-0", "bytes=5-0") as "to the end".
  const S3Object = require('s3rver/lib/models/object');
  FilesystemStore.prototype.getObject = async function getObject(
    bucket: string,
    key: string,
    options?: { start?: number; end?: number },
  ) {
    try {
      const metadata = await this.getMetadata(bucket, key);
      const lastByte = Math.max(0, Number(metadata['content-length']) - 1);
      const ranged = options !== undefined && (options.start !== undefined || options.end !== undefined);
      const range = {
        start: options?.start ?? 0,
        end: Math.min(options?.end ?? Number.POSITIVE_INFINITY, lastByte),
      };
      const object = new S3Object(bucket, key, null, metadata);
      if (ranged) object.range = range;
      const empty = Number(metadata['content-length']) === 0;
      if (range.start < 0 || range.end < range.start || (ranged && empty)) return object;
      object.content = await new Promise((resolve, reject) => {
        const stream = createReadStream(this.getResourcePath(bucket, key, 'object'), range)
          .on('error', reject)
          .on('open', () => resolve(stream));
      });
      return object;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  };

  const server = new S3rver({
    address: '127.0.0.1',
    port: config.port,
    silent: true,
    directory: config.directory,
    configureBuckets: config.buckets.map((name) => ({ name })),
  });

  const uploadsDir = (bucket: string) => path.join(config.directory, bucket, '._S3rver_uploads');
  const bucketExists = async (bucket: string) => {
    const found = await stat(path.join(config.directory, bucket)).catch(() => undefined);
    if (!found?.isDirectory()) {
      throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket });
    }
  };

  // Runs before s3rver's own middleware (Koa composes `middleware` when the server starts listening).
  server.middleware.unshift(async (ctx: KoaContext, next: () => Promise<void>) => {
    if (failures.count > 0) {
      failures.count -= 1;
      throw failures.status === 503
        ? new S3Error('SlowDown', 'Please reduce your request rate.')
        : new S3Error('InternalError', 'We encountered an internal error. Please try again.');
    }
    const [, bucket = '', ...keyParts] = ctx.path.split('/');
    const key = decodeURIComponent(keyParts.join('/'));
    if (config.createOnlyPolicy && key) {
      // PutObject (not UploadPart, which carries partNumber) and CompleteMultipartUpload.
      const creates =
        (ctx.method === 'PUT' && ctx.query.partNumber === undefined) ||
        (ctx.method === 'POST' && ctx.query.uploadId !== undefined);
      const sseC = ctx.headers['x-amz-server-side-encryption-customer-algorithm'] !== undefined;
      if ((creates && ctx.headers['if-none-match'] === undefined) || sseC) {
        throw new S3Error('AccessDenied', 'Access Denied');
      }
    }
    if (ctx.method === 'DELETE' && key && ctx.query.uploadId !== undefined) {
      await bucketExists(bucket);
      const dir = path.join(uploadsDir(bucket), path.basename(ctx.query.uploadId));
      if (!existsSync(dir) || (await readFile(path.join(dir, 'key'), 'utf8')) !== key) {
        throw new S3Error('NoSuchUpload', 'The specified upload does not exist.', {
          UploadId: ctx.query.uploadId,
        });
      }
      await rm(dir, { recursive: true, force: true });
      ctx.status = 204;
      return;
    }
    if (ctx.method === 'GET' && bucket && !key && ctx.query.uploads !== undefined) {
      await bucketExists(bucket);
      const prefix = ctx.query.prefix ?? '';
      const ids = existsSync(uploadsDir(bucket)) ? (await readdir(uploadsDir(bucket))).sort() : [];
      const uploads: string[] = [];
      for (const id of ids) {
        const uploadKey = await readFile(path.join(uploadsDir(bucket), id, 'key'), 'utf8').catch(
          () => undefined,
        );
        if (uploadKey === undefined || !uploadKey.startsWith(prefix)) continue;
        const initiated = (await stat(path.join(uploadsDir(bucket), id))).mtime.toISOString();
        uploads.push(
          `<Upload><Key>${escapeXml(uploadKey)}</Key><UploadId>${id}</UploadId><Initiated>${initiated}</Initiated></Upload>`,
        );
      }
      ctx.type = 'application/xml';
      ctx.body =
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
        `<Bucket>${escapeXml(bucket)}</Bucket><Prefix>${escapeXml(prefix)}</Prefix><IsTruncated>false</IsTruncated>` +
        `${uploads.join('')}</ListMultipartUploadsResult>`;
      return;
    }
    await requestHeaders.run(ctx.headers, next);
  });

  // Internal errors are the wrapper's or s3rver's bugs: show them (PGKEEP_S3RVER_DEBUG=1 forwards stderr).
  server.on('error', (error: { status?: number; stack?: string }) => {
    if ((error.status ?? 500) >= 500) process.stderr.write(`s3rver: ${error.stack}\n`);
  });
  const address = (await server.run()) as { port: number };
  process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);

  const shutdown = () => {
    server.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.on('SIGTERM', shutdown);
  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    const message = JSON.parse(line) as { fail?: { count: number; status: number } };
    if (message.fail) failures = { ...message.fail };
    process.stdout.write(`${JSON.stringify({ ok: true })}\n`);
  });
  // EOF on stdin: the test process is gone. Clean up what it can no longer clean up.
  commands.on('close', () => {
    if (config.removeDirectoryWhenOrphaned) rmSync(config.directory, { recursive: true, force: true });
    shutdown();
  });
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

if (process.argv[2] === CHILD_FLAG && import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runChild(JSON.parse(process.argv[3] ?? '{}') as ChildConfig).catch((error: unknown) => {
    process.stdout.write(`${JSON.stringify({ error: String(error) })}\n`);
    process.exit(1);
  });
}
