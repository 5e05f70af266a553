/**
 * How `file://` storage writes an object's bytes: into a temp file, flushed to disk as it grows
 * and fsynced at the end (./file-storage.ts renames or links it into place).
 */
import { type FileHandle, open } from 'node:fs/promises';
import { Writable } from 'node:stream';

/** A write to the temp file failed (as opposed to the body stream failing). */
export class SinkError extends Error {}

/**
 * Bytes written between background flushes. The page cache holds a whole dump otherwise (nothing
 * makes the kernel write it back sooner on a host with memory to spare), and the fsync at the end
 * then writes all of it while the backup waits, after the dump has ended. Flushing as the object
 * grows overlaps that with the dump; the final fsync finds little left (docs/performance.md).
 */
const FLUSH_EVERY_BYTES = 32 * 1024 * 1024;

/** A Writable into `handle` that fsyncs and closes it on finish; its own failures are {@link SinkError}s. */
export function fileSink(handle: FileHandle): Writable {
  const fail = (error: unknown) => new SinkError('write to temp file failed', { cause: error });
  let unflushed = 0;
  // At most one background flush at a time; its failure fails the write like a failed writev.
  let flushing: Promise<void> | undefined;
  let flushError: unknown;
  const flushInBackground = () => {
    unflushed = 0;
    flushing = handle.datasync().then(
      () => {
        flushing = undefined;
      },
      (error: unknown) => {
        flushError ??= error;
        flushing = undefined;
      },
    );
  };
  return new Writable({
    highWaterMark: 1024 * 1024,
    writev(chunks, callback) {
      if (flushError !== undefined) return callback(fail(flushError));
      const buffers = chunks.map((entry) => entry.chunk as Buffer);
      writeAll(handle, buffers).then(
        () => {
          for (const buffer of buffers) unflushed += buffer.length;
          if (unflushed >= FLUSH_EVERY_BYTES && flushing === undefined) flushInBackground();
          callback();
        },
        (error: unknown) => callback(fail(error)),
      );
    },
    final(callback) {
      Promise.resolve(flushing)
        .then(() => {
          if (flushError !== undefined) throw flushError;
          return handle.sync();
        })
        .then(
          () => callback(),
          (error: unknown) => callback(fail(error)),
        );
    },
    destroy(error, callback) {
      // A flush still running uses the handle: close it only after.
      Promise.resolve(flushing)
        .then(() => handle.close())
        .then(
          () => callback(error),
          (closeError: unknown) => callback(error ?? fail(closeError)),
        );
    },
  });
}

/** writev() may write less than asked (a nearly full disk); keep going until all is written or it fails. */
async function writeAll(handle: FileHandle, buffers: Buffer[]): Promise<void> {
  let pending = buffers;
  while (pending.length > 0) {
    let { bytesWritten } = await handle.writev(pending);
    if (bytesWritten === 0) throw new Error('write to temp file made no progress');
    const rest: Buffer[] = [];
    for (const buffer of pending) {
      if (bytesWritten >= buffer.length) {
        bytesWritten -= buffer.length;
      } else {
        rest.push(bytesWritten > 0 ? buffer.subarray(bytesWritten) : buffer);
        bytesWritten = 0;
      }
    }
    pending = rest;
  }
}

/** fsyncs a directory, so a rename or link in it survives a crash. */
export async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } catch (error) {
    // Some network file systems cannot fsync a directory; their rename is as durable as it gets.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EBADF') throw error;
  } finally {
    await handle.close();
  }
}
