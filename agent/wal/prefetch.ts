/**
 * Prefetching WAL for recovery. PostgreSQL asks restore_command for one segment at a time and
 * replays it before asking for the next, so a download per call leaves the replay idle while the
 * repository answers. After each fetched segment, `wal-fetch` starts a detached prefetcher that
 * downloads the following segments into the spool; the next `wal-fetch` finds its file there and
 * only renames it into place.
 *
 * A prefetched file appears only complete and verified (the same checks and temp-file-and-rename
 * as wal-fetch), so taking one is as safe as fetching it. One prefetcher runs per cluster (a lock
 * file with its pid); it stops at the first missing segment, the end of the archive.
 */
import { copyFile, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { nextWalSegmentFileName, parseWalFileName } from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';
import { fetchWalFile, fsyncDir } from './fetch.ts';
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
    const tmp = `${destination}.pgkeep-${process.pid}.tmp`;
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
  /** The segment just fetched: prefetching starts after it. */
  readonly after: string;
  readonly count: number;
  /** Downloads at once. @default 2 */
  readonly parallelism?: number;
  readonly retry: RetryPolicy;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the per-cluster prefetch lock; undefined when a live prefetcher holds it. */
async function lock(spool: WalSpool): Promise<(() => Promise<void>) | undefined> {
  await mkdir(spool.root, { recursive: true, mode: 0o700 });
  const path = `${spool.root}/prefetch.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx', 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(path, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const pid = Number(await readFile(path, 'utf8').catch(() => '0'));
      if (pid > 0 && processAlive(pid)) return undefined;
      await rm(path, { force: true });
    }
  }
  return undefined;
}

/** Downloads the `count` segments after `after` that are not in the spool yet; see the module comment. */
export async function prefetchAhead(options: PrefetchOptions): Promise<number> {
  const release = await lock(options.spool);
  if (!release) return 0;
  try {
    const after = parseWalFileName(options.after);
    await mkdir(options.spool.prefetchDir, { recursive: true, mode: 0o700 });
    const present = new Set(await readdir(options.spool.prefetchDir));
    // Files behind the replay position were skipped (another timeline, or fetched directly): drop them.
    for (const name of present) {
      const parsed = parseWalFileName(name);
      if (!parsed?.position || (after?.position !== undefined && parsed.position <= after.position)) {
        await rm(options.spool.prefetchPath(name), { force: true });
      }
    }
    const wanted: string[] = [];
    let name = options.after;
    for (let i = 0; i < options.count; i++) {
      name = nextWalSegmentFileName(name);
      if (!present.has(name)) wanted.push(name);
    }
    let fetched = 0;
    let ended = false;
    const worker = async () => {
      for (let next = wanted.shift(); next !== undefined && !ended; next = wanted.shift()) {
        const outcome = await fetchWalFile({
          storage: options.storage,
          cluster: options.cluster,
          identities: options.identities,
          walFileName: next,
          destination: options.spool.prefetchPath(next),
          retry: options.retry,
        });
        if (outcome === 'missing') ended = true;
        else fetched++;
      }
    };
    await Promise.all(Array.from({ length: options.parallelism ?? 2 }, worker));
    return fetched;
  } finally {
    await release();
  }
}
