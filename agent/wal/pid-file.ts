/**
 * The spool's pid file (`WalSpool.agentPidFile`): while it names a live process, archive_command's
 * shell line waits for that process's markers instead of starting Node. The long-running
 * `pgkeep agent` simply overwrites it when it starts; a transient `pgkeep wal-pusher` only ever
 * claims it when no live process holds it, and gives way as soon as it names someone else.
 */
import { link, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from '../process-alive.ts';

/** The pid the file names, or undefined when it is absent, empty or not a pid. */
export async function readPidFile(file: string): Promise<number | undefined> {
  const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** The running process the file names, if any. */
export async function livePidFileHolder(file: string): Promise<number | undefined> {
  const pid = await readPidFile(file);
  return pid !== undefined && processAlive(pid) ? pid : undefined;
}

/**
 * Writes `pid` to `file` unless a live process other than `pid` holds it; true when `file` names
 * `pid` afterwards. The content appears whole (a temp file hard-linked into place, which fails if
 * the name exists), so a reader never sees an empty pid file; a pid file of a dead process is
 * replaced.
 */
export async function claimPidFile(file: string, pid: number): Promise<boolean> {
  const tmp = `${file}.${process.pid}.${pid}.tmp`;
  await writeFile(tmp, `${pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await link(tmp, file);
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      let holder = await readPidFile(file);
      // An empty file may be one being written right now (the service writes its pid in place).
      if (holder === undefined) holder = await sleep(20).then(() => readPidFile(file));
      if (holder === pid) return true;
      if (holder !== undefined && processAlive(holder)) return false;
      // Stale (its process is gone) or unreadable: remove it and try again.
      await unlink(file).catch(() => undefined);
    }
    return false;
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Removes `file` only while it still names `pid`: a successor's pid file stays. */
export async function releasePidFile(file: string, pid: number): Promise<void> {
  if ((await readPidFile(file)) === pid) await rm(file, { force: true });
}
