/**
 * Named pipes in place of the tar files `pg_basebackup -Ft -D DIR` writes for a cluster with
 * tablespaces (it cannot send more than one archive to stdout): each pipe is read by the encrypting
 * pipeline while pg_basebackup writes it, so no plaintext byte is ever stored on disk, and a killed
 * backup leaves only empty pipes behind.
 *
 * pg_basebackup insists that DIR is empty when it starts, and opens `DIR/base.tar` and
 * `DIR/<oid>.tar` only once the server has answered BASE_BACKUP. So DIR starts as an empty directory
 * nobody may write to (0500), the pipes wait in a sibling directory (0500 too once they are made),
 * and `arm()` renames the sibling over DIR, atomically, between the two. An open before that fails
 * with EACCES, as does one for a tablespace created after the pipes were made: pg_basebackup can
 * never create a regular file here (for the agent's own user; root ignores modes).
 *
 * "Between the two" is made certain, not raced (a fast checkpoint answers in a millisecond):
 * pg_basebackup's stderr is a pipe the agent has filled, so its first message — "initiating base
 * backup", printed after the directory check and before BASE_BACKUP is sent — blocks it; the agent
 * sees it blocked in that write (/proc/PID/wchan), arms, and only then drains the pipe.
 *
 * Linux: pipes are opened for reading without blocking (O_NONBLOCK), so that the writer's open does
 * not wait, and report end-of-file only after a writer has come and gone.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, closeSync, constants, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeExit } from '../child-process.ts';

/** `base` or a tablespace oid: the archives pg_basebackup writes. */
export type ArchiveName = 'base' | number;

export interface ArchivePipes {
  /** What to give pg_basebackup as -D. */
  readonly directory: string;
  /** Each archive's plaintext, ending only if pg_basebackup succeeded (see {@link ArchivePipes.finish}). */
  readonly archives: ReadonlyMap<ArchiveName, Transform>;
  /** Puts the pipes where pg_basebackup opens its tar files: call once it has checked the directory. */
  arm(): void;
  /**
   * pg_basebackup has exited: with `undefined` (success) each archive ends after its last byte, and
   * an archive it never wrote fails; with an error every archive fails with it.
   */
  finish(error: Error | undefined): void;
}

const fileName = (archive: ArchiveName) => `${archive}.tar`;

/**
 * Passes an archive's bytes through and ends only once pg_basebackup's exit is known: a tar cut
 * short by a failed pg_basebackup must fail, never be stored as if complete.
 */
class ExitGate extends Transform {
  bytes = 0;
  readonly #name: string;
  #exit: Promise<void>;
  #settle!: (error: Error | undefined) => void;

  constructor(name: string) {
    super();
    this.#name = name;
    this.#exit = new Promise<void>((resolve, reject) => {
      this.#settle = (error) => (error ? reject(error) : resolve());
    });
    this.#exit.catch(() => undefined);
  }

  settle(error: Error | undefined): void {
    this.#settle(error);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.#exit.then(() => {
      // Every tar pg_basebackup writes ends with at least two 512-byte zero blocks.
      if (this.bytes === 0) {
        callback(
          new Error(
            `pg_basebackup wrote no ${this.#name} although it succeeded: was the tablespace dropped during the backup? Run the backup again`,
          ),
        );
      } else callback();
    }, callback);
  }
}

/** Makes the pipes for `archives` under `stagingDir` (created here, private to the agent's user). */
export async function openArchivePipes(
  stagingDir: string,
  archives: readonly ArchiveName[],
): Promise<ArchivePipes> {
  await mkdir(stagingDir, { recursive: true, mode: 0o700 });
  const directory = join(stagingDir, 'out');
  const waiting = join(stagingDir, 'pipes');
  await mkdir(directory, { mode: 0o500 });
  await mkdir(waiting, { mode: 0o700 });
  execFileSync('mkfifo', ['-m', '600', ...archives.map((a) => join(waiting, fileName(a)))]);
  const gates = new Map<ArchiveName, ExitGate>();
  const sockets = new Map<ArchiveName, Socket>();
  for (const archive of archives) {
    const fd = openSync(join(waiting, fileName(archive)), constants.O_RDONLY | constants.O_NONBLOCK);
    const socket = new Socket({ fd, readable: true, writable: false });
    const gate = new ExitGate(fileName(archive));
    socket.on('error', (error) => gate.destroy(error));
    gate.on('close', () => socket.destroy());
    socket.pipe(gate);
    sockets.set(archive, socket);
    gates.set(archive, gate);
  }
  chmodSync(waiting, 0o500);

  let armed = false;
  return {
    directory,
    archives: gates,
    arm() {
      if (armed) return;
      renameSync(waiting, directory);
      armed = true;
    },
    finish(error) {
      for (const [archive, gate] of gates) {
        if (error) {
          gate.destroy(error);
          continue;
        }
        gate.settle(undefined);
        const socket = sockets.get(archive);
        if (!armed || !socket || socket.readableEnded || socket.destroyed) continue;
        // A pipe pg_basebackup never opened reports no end-of-file: open and close it as a writer,
        // so its reader ends (after any bytes still buffered) and the gate reports it unwritten.
        try {
          closeSync(openSync(join(directory, fileName(archive)), constants.O_WRONLY | constants.O_NONBLOCK));
        } catch {
          // ENXIO: the reader is already gone.
        }
      }
    },
  };
}

/** Removes a staging directory, including the parts made read-only for pg_basebackup. */
export async function removeStaging(path: string): Promise<void> {
  try {
    execFileSync('chmod', ['-R', 'u+rwx', path], { stdio: 'ignore' });
  } catch {
    // Already gone.
  }
  await rm(path, { recursive: true, force: true });
}

/**
 * Removes the `basebackup-*` staging directories a killed agent left in `clusterSpoolDir` (older
 * agents staged plaintext tar files there). Call it only while holding the cluster's backup lock, so
 * that no running backup's directory is removed. Returns the names removed.
 */
export async function sweepStaleStaging(clusterSpoolDir: string): Promise<string[]> {
  const entries = await readdir(clusterSpoolDir).catch(() => [] as string[]);
  const stale = entries.filter((name) => name.startsWith(STAGING_PREFIX));
  for (const name of stale) await removeStaging(join(clusterSpoolDir, name));
  return stale;
}

/** The name of a backup's staging directory in the cluster's spool. */
export function stagingDirName(backupId: string): string {
  return `${STAGING_PREFIX}${backupId}`;
}

const STAGING_PREFIX = 'basebackup-';

export interface PipedBaseBackupOptions {
  readonly program: string;
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly pipes: ArchivePipes;
  /** Where the stderr pipe is made (the staging directory). */
  readonly stagingDir: string;
  readonly signal?: AbortSignal;
  /** Sees pg_basebackup's stderr as it comes. */
  readonly onStderr: (text: string) => void;
}

/** Where `pid` sleeps in the kernel ("pipe_write", "do_sys_poll"...); "0" while it runs; "" if unknown. */
function wchan(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/wchan`, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Runs pg_basebackup writing into `pipes` (its `-D` must be `pipes.directory`), arming them at the
 * one safe moment (see the top of this file). Resolves when it exited 0; rejects with its stderr
 * otherwise. Then call `pipes.finish`.
 */
export async function runIntoPipes(options: PipedBaseBackupOptions): Promise<void> {
  const errPath = join(options.stagingDir, 'stderr');
  execFileSync('mkfifo', ['-m', '600', errPath]);
  const readFd = openSync(errPath, constants.O_RDONLY | constants.O_NONBLOCK);
  const childFd = openSync(errPath, constants.O_WRONLY);
  const fillFd = openSync(errPath, constants.O_WRONLY | constants.O_NONBLOCK);
  let filler = 0;
  const page = Buffer.alloc(4096, 0x20);
  try {
    for (;;) filler += writeSync(fillFd, page);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
  } finally {
    closeSync(fillFd);
  }
  const child = spawn(options.program, options.args, {
    env: options.env,
    stdio: ['ignore', 'ignore', childFd],
  });
  closeSync(childFd);
  const onAbort = () => child.kill('SIGTERM');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let startError = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      startError = `could not be started: ${error.message}`;
      resolve({ code: null, signal: null });
    });
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  // Until pg_basebackup blocks on its first message (or is gone), it has not asked for the backup.
  // A kernel that hides wchan leaves only the message itself as the signal: then an open that wins
  // the race fails with EACCES (a failed backup, still no plaintext).
  const started = Date.now();
  let visible = false;
  let fallback = false;
  while (!done && child.pid !== undefined) {
    const where = wchan(child.pid);
    if (where.includes('pipe_write')) break;
    visible ||= where !== '' && where !== '0';
    if (!visible && Date.now() - started > 5_000) {
      fallback = true;
      break;
    }
    await sleep(2);
  }
  if (!done && !fallback) options.pipes.arm();

  let skip = filler;
  let stderr = '';
  const reader = new Socket({ fd: readFd, readable: true, writable: false });
  reader.on('data', (chunk: Buffer) => {
    const text = chunk.subarray(Math.min(skip, chunk.length));
    skip = Math.max(0, skip - chunk.length);
    if (text.length === 0) return;
    stderr += text.toString();
    if (fallback && stderr.includes('initiating base backup')) options.pipes.arm();
    options.onStderr(text.toString());
  });
  const drained = new Promise<void>((resolve) => {
    reader.once('end', resolve);
    reader.once('close', resolve);
  });
  const { code, signal } = await exited;
  options.signal?.removeEventListener('abort', onAbort);
  await drained;
  if (startError) throw new Error(`pg_basebackup ${startError}`);
  if (code !== 0) {
    throw new Error(`pg_basebackup ${describeExit(code, signal)}: ${stderr.trim().slice(-2000)}`);
  }
}
