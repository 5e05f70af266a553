/**
 * Prefetching WAL for recovery. PostgreSQL asks restore_command for one segment at a time and
 * replays it before asking for the next, so a download per call leaves the replay idle while the
 * repository answers. `wal-fetch` starts a detached prefetcher (before it downloads the segment
 * asked for, so the two overlap) that keeps the following segments downloaded in the spool;
 * restore_command's shell line finds each there and only renames it into place.
 *
 * Files in the prefetch directory of the data directory's spool, `prefetch/<boot id>/`
 * (WalSpool.prefetchBootDir):
 *
 *   <name>                      complete and verified (the checks and temp-file-and-rename of
 *                               wal-fetch), so taking one is as safe as fetching it
 *   <name>.pgkeep-<pid>.tmp     <name> is in the window of the prefetcher <pid>: queued (empty) or
 *                               being written; it becomes <name> in one rename or disappears
 *
 * `prefetch.lock` holds the live prefetcher's pid (one per data directory). restore_command's
 * shell line waits, bounded, while the prefetcher named there is alive and has a temp file for the segment
 * asked for, instead of starting Node to download the same segment a second time. The prefetcher
 * stops at the first missing segment (the end of the archive), on an error it cannot retry, when
 * recovery has taken nothing for a while, or at once when the server it prefetches for has stopped
 * or left recovery (see serverStillRecovering): nobody can take its files then, and a server stopped
 * and its directory removed must not leave a process behind. It removes its temp files when it stops.
 */
import { access, copyFile, mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { nextWalSegmentFileName, parseWalFileName } from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';
import { claimPidFile, livePidFileHolder, processAlive, readPidFile, releasePidFile } from '../pid-lock.ts';
import { fetchWalFile, fsyncDir, tempPathFor } from './fetch.ts';
import type { RetryPolicy } from './retry.ts';
import type { WalSpool } from './spool.ts';

/**
 * Moves a prefetched `walFileName` to `destination` if there is one; false otherwise. Across file
 * systems the file is copied beside the destination first, so `%p` still appears in one rename.
 */
export async function takePrefetched(
  spool: WalSpool,
  walFileName: string,
  destination: string,
): Promise<boolean> {
  const source = spool.prefetchPath(walFileName);
  try {
    await rename(source, destination);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code !== 'EXDEV') throw error;
    const tmp = tempPathFor(destination);
    try {
      await copyFile(source, tmp);
      const handle = await open(tmp, 'r');
      await handle.sync().finally(() => handle.close());
      await rename(tmp, destination);
    } catch (copyError) {
      await rm(tmp, { force: true });
      if ((copyError as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw copyError;
    }
    await rm(source, { force: true });
  }
  await fsyncDir(dirname(destination));
  return true;
}

export interface PrefetchOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly identities: readonly string[];
  readonly spool: WalSpool;
  /** The segment recovery asked for: prefetching starts after it. */
  readonly after: string;
  /** Segments kept downloaded ahead of recovery. */
  readonly count: number;
  /** Downloads at once. @default 2 */
  readonly parallelism?: number;
  readonly retry: RetryPolicy;
  /**
   * Whether recovery can still take prefetched files (see {@link serverStillRecovering}), asked
   * every `watchMs`; once false the prefetcher stops at once, aborting its downloads.
   * @default - only the idle time and the end of the archive stop it
   */
  readonly stillWanted?: () => Promise<boolean>;
}

/** The pid of the postmaster running on `dataDir`, as its postmaster.pid names it, if any. */
export async function postmasterPid(dataDir: string): Promise<number | undefined> {
  return await readPidFile(join(dataDir, 'postmaster.pid'));
}

/**
 * A check that the server recovering `dataDir` still does: its postmaster (`postmaster`, which
 * wal-fetch saw while PostgreSQL ran it, else the one postmaster.pid names now) is alive and still
 * named in postmaster.pid (a clean stop removes the file; a killed server leaves it naming a dead
 * pid), and recovery.signal or standby.signal is still there (PostgreSQL removes it when recovery
 * ends, after which restore_command is not called). Undefined when no server runs on `dataDir`
 * (wal-fetch run by hand): nothing to watch then.
 */
export async function serverStillRecovering(
  dataDir: string,
  postmaster?: number,
): Promise<(() => Promise<boolean>) | undefined> {
  const pidFile = join(dataDir, 'postmaster.pid');
  // A server that stopped between wal-fetch and this start is gone already: the check says so.
  const pid = postmaster ?? (await readPidFile(pidFile));
  if (pid === undefined || (postmaster === undefined && !processAlive(pid))) return undefined;
  const signalFiles = ['recovery.signal', 'standby.signal'].map((f) => join(dataDir, f));
  const recovering = async () =>
    (
      await Promise.all(
        signalFiles.map((f) =>
          access(f).then(
            () => true,
            () => false,
          ),
        ),
      )
    ).some(Boolean);
  // wal-fetch passes the postmaster only when PostgreSQL ran it, i.e. in recovery.
  const watchRecovery = postmaster !== undefined || (await recovering());
  return async () =>
    (await readPidFile(pidFile)) === pid && processAlive(pid) && (!watchRecovery || (await recovering()));
}

/** Makes `pid` the holder of the prefetch lock unless a live process holds it; true when it does. */
async function claimLock(spool: WalSpool, pid: number): Promise<boolean> {
  await mkdir(spool.root, { recursive: true, mode: 0o700 });
  // wal-fetch claims the lock for the prefetcher it starts (see reservePrefetch): the prefetcher
  // then finds its own pid there.
  return claimPidFile(spool.prefetchLockFile, pid);
}

/** Whether a live prefetcher holds the lock for this data directory. */
export async function prefetcherRunning(spool: WalSpool): Promise<boolean> {
  return (await livePidFileHolder(spool.prefetchLockFile)) !== undefined;
}

/**
 * For wal-fetch, right after it started the prefetcher `pid` for the segments after `after`:
 * claims the lock in the prefetcher's name and creates its temp files for the first `count` of
 * them, so restore_command's shell line waits for the prefetcher from this moment on rather than
 * from when it has started up (a Node start, the time of a whole segment). False when another
 * live prefetcher holds the lock (the one just started then finds it held and exits).
 */
export async function reservePrefetch(
  spool: WalSpool,
  pid: number,
  after: string,
  count: number,
): Promise<boolean> {
  if (!(await claimLock(spool, pid))) return false;
  await mkdir(spool.prefetchBootDir, { recursive: true, mode: 0o700 });
  const present = new Set(await readdir(spool.prefetchBootDir));
  for (let i = 0, name = after; i < count; i++) {
    name = nextWalSegmentFileName(name);
    if (!present.has(name)) await writeFile(tempPathFor(spool.prefetchPath(name), pid), '', { flag: 'a' });
  }
  return true;
}

/** The file through which wal-fetch tells a running prefetcher which segment recovery asked for last. */
function wantFile(spool: WalSpool): string {
  return `${spool.root}/prefetch.want`;
}

/** Records the segment recovery just asked for, so a running prefetcher follows it (another timeline, a jump). */
export async function notePrefetchWanted(spool: WalSpool, walFileName: string): Promise<void> {
  await mkdir(spool.root, { recursive: true, mode: 0o700 });
  const tmp = `${wantFile(spool)}.${process.pid}.tmp`;
  await writeFile(tmp, walFileName);
  await rename(tmp, wantFile(spool));
}

const TEMP_FILE = /^(.+)\.pgkeep-(\d+)\.tmp$/;

/**
 * Keeps the `count` segments after the one recovery asked for last downloaded in the spool.
 * `parallelism` workers each take the lowest segment of the window that is neither present nor
 * being downloaded, as soon as they are free (their starts spread over a download's time); every
 * `pollMs` the window moves on past the files
 * recovery took (they disappear: restore_command's shell line or wal-fetch moved them) or to the
 * segment wal-fetch noted last. Ends at the first missing segment (the end of the archive), on an
 * error that retries did not fix (rejecting with it once the other downloads have finished), or
 * after `idleMs` in which the whole window was downloaded and recovery took nothing. Resolves to
 * the number of files downloaded.
 */
export async function prefetchAhead(
  options: PrefetchOptions & { idleMs?: number; pollMs?: number; watchMs?: number },
): Promise<number> {
  const { spool } = options;
  if (!(await claimLock(spool, process.pid))) return 0;
  const idleMs = options.idleMs ?? 30_000;
  const pollMs = options.pollMs ?? 25;
  const watchMs = options.watchMs ?? 250;
  let lastWatch = Date.now();
  /** Aborts the downloads under way when the server is gone. */
  const abandon = new AbortController();
  const mine = (name: string) => tempPathFor(spool.prefetchPath(name));
  let fetched = 0;
  let stopping = false;
  let failure: { error: unknown } | undefined;
  let window: string[] = [];
  /** Final files of the window in the last listing of the directory. */
  let listed = new Set<string>();
  /** Files the workers wrote (they may be taken before a listing shows them). */
  const done = new Set<string>();
  const inFlight = new Set<string>();
  let waiting: (() => void)[] = [];
  const wakeWorkers = () => {
    for (const resolve of waiting) resolve();
    waiting = [];
  };
  const parallelism = options.parallelism ?? 2;
  /** Recent download time (ms), and when the last download started. */
  let typicalMs: number | undefined;
  let lastStart = 0;
  /**
   * How long to hold back the next start. Downloads that start together share the machine and end
   * together, and recovery, which takes one segment at a time, would then wait for pairs: starts
   * are spread over a download's time instead (after the first download, which runs alone).
   */
  const holdBack = () => {
    if (inFlight.size === 0) return 0;
    if (typicalMs === undefined) return Number.POSITIVE_INFINITY;
    return typicalMs / parallelism - (Date.now() - lastStart);
  };
  const worker = async () => {
    while (!stopping) {
      const name = window.find((n) => !listed.has(n) && !done.has(n) && !inFlight.has(n));
      const hold = name === undefined ? Number.POSITIVE_INFINITY : holdBack();
      if (name === undefined || hold > 0) {
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          if (hold < Number.POSITIVE_INFINITY) setTimeout(resolve, hold);
        });
        continue;
      }
      inFlight.add(name);
      const started = Date.now();
      lastStart = started;
      try {
        const outcome = await fetchWalFile({
          storage: options.storage,
          cluster: options.cluster,
          identities: options.identities,
          walFileName: name,
          destination: spool.prefetchPath(name),
          retry: options.retry,
          durable: spool.prefetchDurable,
          signal: abandon.signal,
        });
        if (outcome === 'missing') {
          // The end of the archive: nothing after it is fetched, and the shell line stops waiting.
          stopping = true;
          await rm(mine(name), { force: true });
        } else {
          fetched++;
          done.add(name);
          const took = Date.now() - started;
          typicalMs = typicalMs === undefined ? took : 0.7 * typicalMs + 0.3 * took;
        }
      } catch (error) {
        stopping = true;
        if (!abandon.signal.aborted) failure ??= { error };
      } finally {
        inFlight.delete(name);
        wakeWorkers();
      }
    }
  };
  const removeMine = async (keep: (name: string) => boolean) => {
    for (const file of await readdir(spool.prefetchBootDir).catch(() => [] as string[])) {
      const temp = TEMP_FILE.exec(file);
      if (temp?.[2] === String(process.pid) && !keep(temp[1] as string))
        await rm(spool.prefetchPath(file), { force: true });
    }
  };

  const workers: Promise<void>[] = [];
  try {
    await mkdir(spool.prefetchBootDir, { recursive: true, mode: 0o700 });
    // Files of an earlier boot are never taken (see WalSpool.prefetchBootDir).
    for (const entry of await readdir(spool.prefetchDir)) {
      const path = join(spool.prefetchDir, entry);
      if (path !== spool.prefetchBootDir) await rm(path, { recursive: true, force: true });
    }
    // Temp files of a prefetcher that died would make the shell line wait for nothing.
    for (const file of await readdir(spool.prefetchBootDir)) {
      const temp = TEMP_FILE.exec(file);
      if (temp && Number(temp[2]) !== process.pid) await rm(spool.prefetchPath(file), { force: true });
    }
    let cursor = options.after;
    let lastWanted = options.after;
    let lastProgress = Date.now();
    for (;;) {
      // Where recovery is: the last name wal-fetch noted, or the last file taken from the window.
      const wanted = (await readFile(wantFile(spool), 'utf8').catch(() => '')).trim();
      if (wanted !== lastWanted && parseWalFileName(wanted)?.kind === 'segment') {
        lastWanted = wanted;
        cursor = wanted;
        lastProgress = Date.now();
      }
      // A file a worker renames while the directory is being read may be missing from the listing
      // without having been taken: only files written before the listing started count as taken.
      const doneBefore = [...done];
      const files = await readdir(spool.prefetchBootDir);
      const now = new Set(files.filter((f) => !f.endsWith('.tmp')));
      const taken = [...listed, ...doneBefore].filter((n) => !now.has(n)).sort();
      const lastTaken = taken[taken.length - 1];
      if (lastTaken !== undefined && lastTaken > cursor) {
        cursor = lastTaken;
        lastProgress = Date.now();
      }
      const next: string[] = [];
      for (let i = 0, name = cursor; i < options.count; i++) {
        name = nextWalSegmentFileName(name);
        next.push(name);
      }
      window = next;
      listed = new Set(window.filter((n) => now.has(n)));
      for (const name of done) if (!window.includes(name) || taken.includes(name)) done.delete(name);
      // While a segment of the window is still queued or downloading, recovery may be waiting for it
      // (the shell line waits for its temp file): only time with the window complete is idle, or a
      // slow repository (or a loaded machine) would end the prefetcher before it fetched anything.
      if (window.some((name) => !listed.has(name) && !done.has(name))) lastProgress = Date.now();
      for (const file of files) {
        // Not in the window: recovery passed it or moved to another timeline.
        const name = TEMP_FILE.exec(file)?.[1] ?? file;
        if (!window.includes(name) && !inFlight.has(name))
          await rm(spool.prefetchPath(file), { force: true });
      }
      if (stopping || Date.now() - lastProgress > idleMs) break;
      if (options.stillWanted && Date.now() - lastWatch >= watchMs) {
        lastWatch = Date.now();
        if (!(await options.stillWanted())) {
          abandon.abort();
          break;
        }
      }
      // Queued segments get their temp file now, so the shell line waits for them.
      const temps = new Set(files.filter((f) => f.endsWith('.tmp')));
      for (const name of window) {
        const temp = mine(name);
        if (!listed.has(name) && !done.has(name) && !inFlight.has(name) && !temps.has(basename(temp)))
          await writeFile(temp, '', { flag: 'a' });
      }
      while (workers.length < parallelism) workers.push(worker());
      wakeWorkers();
      await new Promise((r) => setTimeout(r, pollMs));
    }
    stopping = true;
    wakeWorkers();
    // The shell line stops waiting for queued segments now, not when the downloads under way end.
    await removeMine((name) => inFlight.has(name));
    await Promise.all(workers);
    if (failure) throw failure.error;
    return fetched;
  } finally {
    stopping = true;
    wakeWorkers();
    await Promise.all(workers);
    await removeMine(() => false);
    await releasePidFile(spool.prefetchLockFile, process.pid);
  }
}
