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
import { copyFile, mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { nextWalSegmentFileName, parseWalFileName } from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';
import { processAlive } from '../process-alive.ts';
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

/**
 * Keeps the `count` segments after the one recovery asked for last downloaded in the spool: fills
 * the window, waits until recovery takes the first file of it (the file disappears: wal-fetch or
 * restore_command's shell path moved it), and tops the window up again. Ends at the first missing
 * segment (the end of the archive) or after `idleMs` without progress. Resolves to the number of
 * files downloaded.
 */
export async function prefetchAhead(
  options: PrefetchOptions & { idleMs?: number; pollMs?: number },
): Promise<number> {
  const release = await lock(options.spool);
  if (!release) return 0;
  const { spool } = options;
  const idleMs = options.idleMs ?? 30_000;
  const pollMs = options.pollMs ?? 25;
  try {
    await mkdir(spool.prefetchDir, { recursive: true, mode: 0o700 });
    let cursor = options.after;
    let lastWanted = '';
    let present = new Set<string>();
    let fetched = 0;
    let lastProgress = Date.now();
    for (;;) {
      // Where recovery is: the last name wal-fetch noted, or the last file taken from the window.
      const wanted = (await readFile(wantFile(spool), 'utf8').catch(() => '')).trim();
      if (wanted !== lastWanted && parseWalFileName(wanted)?.kind === 'segment') {
        lastWanted = wanted;
        cursor = wanted;
        lastProgress = Date.now();
      }
      const now = new Set(await readdir(spool.prefetchDir));
      const taken = [...present].filter((n) => !now.has(n)).sort();
      if (taken.length > 0 && (taken[taken.length - 1] as string) > cursor) {
        cursor = taken[taken.length - 1] as string;
        lastProgress = Date.now();
      }
      const window: string[] = [];
      for (let i = 0, name = cursor; i < options.count; i++) {
        name = nextWalSegmentFileName(name);
        window.push(name);
      }
      for (const name of now) {
        // Not in the window: recovery passed it or moved to another timeline.
        if (!window.includes(name) && !name.endsWith('.tmp'))
          await rm(spool.prefetchPath(name), { force: true });
      }
      const queue = window.filter((n) => !now.has(n));
      let ended = false;
      const worker = async () => {
        for (let next = queue.shift(); next !== undefined && !ended; next = queue.shift()) {
          const outcome = await fetchWalFile({
            storage: options.storage,
            cluster: options.cluster,
            identities: options.identities,
            walFileName: next,
            destination: spool.prefetchPath(next),
            retry: options.retry,
          });
          if (outcome === 'missing') ended = true;
          else fetched++;
        }
      };
      if (queue.length > 0) await Promise.all(Array.from({ length: options.parallelism ?? 2 }, worker));
      present = new Set((await readdir(spool.prefetchDir)).filter((n) => window.includes(n)));
      if (ended || Date.now() - lastProgress > idleMs) return fetched;
      await new Promise((r) => setTimeout(r, pollMs));
    }
  } finally {
    await release();
  }
}
