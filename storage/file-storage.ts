/**
 * `file:///path` repositories: local disk or a mounted NAS. Each key is a file under the root
 * directory. A put writes a temp file in the target directory, fsyncs it, renames (or, for a
 * create-only put, hard-links) it into place and fsyncs the directory, so a reader sees either no
 * object or the complete one, also after a crash.
 *
 * The root directory is never created by the driver: if it is missing (an unmounted NAS), every
 * operation fails with {@link RepositoryNotFoundError} instead of filling the local disk or
 * reporting objects as missing.
 *
 * Limits: a key cannot be both an object and a "folder" of other keys (`a` and `a/b`), which S3
 * allows; pgkeep's key layout never does that. Create-only puts need hard links (`link(2)`).
 */
import { randomUUID } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import { type FileHandle, link, mkdir, open, readdir, rename, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { type Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { fileSink, SinkError, syncDirectory } from './file-sink.ts';
import {
  assertByteRange,
  assertListPrefix,
  assertObjectKey,
  compareKeys,
  TEMP_NAME_PREFIX,
} from './object-keys.ts';
import {
  AccessDeniedError,
  type ByteRange,
  type ListOptions,
  lengthChecked,
  ObjectExistsError,
  type ObjectInfo,
  ObjectNotFoundError,
  type PutOptions,
  RepositoryNotFoundError,
  type Storage,
  StorageError,
  StorageUnavailableError,
} from './storage.ts';

const FILE_MODE = 0o640;
const DIRECTORY_MODE = 0o750;
/** Errors of a file system that is (perhaps only for now) not reachable: NFS/SMB hiccups, a failing disk. */
const UNAVAILABLE_CODES = new Set([
  'EIO',
  'ESTALE',
  'ETIMEDOUT',
  'EHOSTDOWN',
  'EHOSTUNREACH',
  'ENOTCONN',
  'ECONNRESET',
]);

export class FileStorage implements Storage {
  readonly displayUrl: string;
  /** Absolute path of the repository directory. */
  readonly root: string;

  /** @param root absolute path of an existing directory */
  constructor(root: string) {
    if (!path.isAbsolute(root)) {
      throw new TypeError(
        `file repository path "${root}" is relative: give an absolute path such as /var/backups/pgkeep`,
      );
    }
    this.root = path.resolve(root);
    this.displayUrl = pathToFileURL(this.root).href;
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<void> {
    let bodyError: unknown;
    body.on('error', (error) => {
      // A SinkError reaches the body only because pipeline() destroys it after the write failed.
      if (!(error instanceof SinkError)) bodyError ??= error;
    });
    try {
      assertObjectKey(key);
      const target = this.pathOf(key);
      if (options.ifAbsent && (await this.statFile(target, key)) !== undefined) {
        // Read the body to its end so the producer finishes normally, but write nothing.
        await pipeline(body, new Writable({ write: (_chunk, _encoding, callback) => callback() }));
        throw new ObjectExistsError(key);
      }
      const directory = path.dirname(target);
      const { handle, temp } = await this.openTemp(directory, key);
      try {
        if (options.sizeBytes === undefined) await pipeline(body, fileSink(handle));
        else await pipeline(body, lengthChecked(key, options.sizeBytes), fileSink(handle));
        if (options.ifAbsent) {
          // link() fails with EEXIST instead of replacing, unlike rename(): the create-only check is atomic.
          await link(temp, target).catch((error: NodeJS.ErrnoException) => {
            if (error.code === 'EEXIST') throw new ObjectExistsError(key, { cause: error });
            if (error.code === 'EPERM' || error.code === 'ENOTSUP' || error.code === 'ENOSYS') {
              throw new StorageError(
                `the file system of ${this.displayUrl} does not support hard links (${error.code}), which create-only writes need: use a local file system or NFS`,
                { cause: error },
              );
            }
            throw error;
          });
          await unlink(temp);
        } else {
          await rename(temp, target);
        }
        await syncDirectory(directory);
      } catch (error) {
        await unlink(temp).catch(() => {});
        throw error;
      }
    } catch (error) {
      body.destroy();
      if (bodyError !== undefined) throw bodyError;
      throw this.mapError(error instanceof SinkError ? error.cause : error, `write ${key}`);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    assertObjectKey(key);
    if (range) assertByteRange(range);
    const file = this.pathOf(key);
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (error) {
      if (isMissing(error)) {
        await this.assertRootExists();
        throw new ObjectNotFoundError(key, { cause: error });
      }
      throw this.mapError(error, `read ${key}`);
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new ObjectNotFoundError(key);
      if (!range) return handle.createReadStream();
      if (range.start >= info.size) {
        throw new StorageError(
          `byte range ${range.start}-${range.end} starts past the end of ${key} (${info.size} bytes): ask for a range within the object`,
        );
      }
      // Like S3, a range that runs past the end returns the bytes up to the end.
      return handle.createReadStream({ start: range.start, end: Math.min(range.end, info.size - 1) });
    } catch (error) {
      await handle.close();
      if (error instanceof StorageError) throw error;
      throw this.mapError(error, `read ${key}`);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    assertObjectKey(key);
    return this.statFile(this.pathOf(key), key);
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    assertListPrefix(prefix);
    await this.assertRootExists();
    // Start in the deepest directory the prefix names completely; filter the rest by name.
    const directoryKey = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    const { startAfter } = options;
    for await (const object of this.walk(directoryKey, prefix))
      if (startAfter === undefined || compareKeys(object.key, startAfter) > 0) yield object;
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key);
    const file = this.pathOf(key);
    try {
      await unlink(file);
    } catch (error) {
      if (isMissing(error)) {
        await this.assertRootExists();
        return;
      }
      throw this.mapError(error, `delete ${key}`);
    }
    await syncDirectory(path.dirname(file)).catch((error: unknown) => {
      throw this.mapError(error, `delete ${key}`);
    });
    // S3 has no folders: drop the ones this delete emptied. A concurrent put recreates its
    // directory if it loses this race (see openTemp).
    let directory = path.dirname(file);
    while (directory !== this.root && directory.startsWith(`${this.root}${path.sep}`)) {
      try {
        await rmdir(directory);
      } catch {
        break;
      }
      directory = path.dirname(directory);
    }
  }

  private pathOf(key: string): string {
    return path.join(this.root, ...key.split('/'));
  }

  private async assertRootExists(): Promise<void> {
    let info: Stats;
    try {
      info = await stat(this.root);
    } catch (error) {
      if (isMissing(error)) {
        throw new RepositoryNotFoundError(
          `repository directory ${this.root} does not exist: create it (mkdir -p ${this.root}) or mount the file system that holds it`,
          { cause: error },
        );
      }
      throw this.mapError(error, 'open the repository');
    }
    if (!info.isDirectory()) {
      throw new RepositoryNotFoundError(
        `repository path ${this.root} is not a directory: point the file:// URL at a directory`,
      );
    }
  }

  private async statFile(file: string, key: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(file);
      if (!info.isFile()) return undefined;
      return { key, sizeBytes: info.size, lastModified: info.mtime };
    } catch (error) {
      if (isMissing(error)) {
        await this.assertRootExists();
        return undefined;
      }
      throw this.mapError(error, `stat ${key}`);
    }
  }

  /** Creates the key's directory (fsyncing every new entry) and an exclusive temp file in it. */
  private async openTemp(directory: string, key: string): Promise<{ handle: FileHandle; temp: string }> {
    await this.assertRootExists();
    for (let attempt = 1; ; attempt += 1) {
      const created = await mkdir(directory, { recursive: true, mode: DIRECTORY_MODE });
      if (created !== undefined) {
        // A new directory is durable only once its parent's entry is: fsync from the first new one down.
        for (let dir = directory; ; dir = path.dirname(dir)) {
          await syncDirectory(path.dirname(dir));
          if (dir === created) break;
        }
      }
      const temp = path.join(directory, `${TEMP_NAME_PREFIX}${randomUUID()}`);
      try {
        return { handle: await open(temp, 'wx', FILE_MODE), temp };
      } catch (error) {
        // A concurrent delete may have removed the (then empty) directory between mkdir and open.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) {
          throw this.mapError(error, `write ${key}`);
        }
      }
    }
  }

  private async *walk(directoryKey: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries: Dirent[];
    try {
      entries = await readdir(path.join(this.root, ...directoryKey.split('/')), { withFileTypes: true });
    } catch (error) {
      if (isMissing(error)) return;
      throw this.mapError(error, `list ${prefix}`);
    }
    // A directory sorts as "<name>/", so "a-b" (0x2d) comes before everything under "a/" (0x2f), as in S3.
    const children = entries
      .filter((entry) => !entry.name.startsWith(TEMP_NAME_PREFIX) && (entry.isFile() || entry.isDirectory()))
      .map((entry) => ({
        key: `${directoryKey}${entry.name}${entry.isDirectory() ? '/' : ''}`,
        isDirectory: entry.isDirectory(),
      }))
      .filter((child) => child.key.startsWith(prefix) || (child.isDirectory && prefix.startsWith(child.key)))
      .sort((a, b) => compareKeys(a.key, b.key));
    for (const child of children) {
      if (child.isDirectory) {
        yield* this.walk(child.key, prefix);
        continue;
      }
      try {
        const info = await stat(path.join(this.root, ...child.key.split('/')));
        yield { key: child.key, sizeBytes: info.size, lastModified: info.mtime };
      } catch (error) {
        if (!isMissing(error)) throw this.mapError(error, `list ${prefix}`);
        // Deleted while listing: it is simply not there.
      }
    }
  }

  private mapError(error: unknown, action: string): Error {
    if (error instanceof StorageError) return error;
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    const where = `${this.displayUrl}`;
    switch (code) {
      case 'EACCES':
      case 'EPERM':
        return new AccessDeniedError(
          `permission denied to ${action} in ${where}: give the user running pgkeep read and write access to ${this.root}`,
          { cause: error },
        );
      case 'ENOSPC':
      case 'EDQUOT':
        return new StorageError(
          `no space left to ${action} in ${where} (${code}): free space or raise the quota`,
          {
            cause: error,
          },
        );
      case 'EROFS':
        return new StorageError(
          `cannot ${action}: ${where} is on a read-only file system; remount it read-write`,
          {
            cause: error,
          },
        );
      case 'ENOTDIR':
      case 'EEXIST':
      case 'EISDIR':
        return new StorageError(
          `cannot ${action} in ${where} (${code}): a file and a directory collide on that path; remove the stray entry`,
          { cause: error },
        );
      default:
        if (code !== undefined && UNAVAILABLE_CODES.has(code)) {
          return new StorageUnavailableError(
            `file system of ${where} is unavailable (${code}) while trying to ${action}: check the disk or NAS mount and retry`,
            { cause: error },
          );
        }
        return new StorageError(
          `failed to ${action} in ${where}: ${(error as Error)?.message ?? String(error)}`,
          {
            cause: error,
          },
        );
    }
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
