/**
 * One backup at a time per cluster, across processes: the service's schedules and a `pgkeep
 * basebackup` run by hand take the same lock file in the spool. A lock whose process is gone (a
 * crash, SIGKILL) is taken over.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../process-alive.ts';

export class BackupRunningError extends Error {
  override name = 'BackupRunningError';
}

/** Runs `fn` holding the cluster's backup lock; rejects with {@link BackupRunningError} if another holds it. */
export async function withBackupLock<T>(spoolRoot: string, what: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(spoolRoot, { recursive: true, mode: 0o700 });
  const path = join(spoolRoot, 'backup.lock');
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(path, 'wx', 0o600);
      await handle.writeFile(JSON.stringify({ pid: process.pid, what, since: new Date().toISOString() }));
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = await readFile(path, 'utf8')
        .then((t) => JSON.parse(t) as { pid: number; what: string; since: string })
        .catch(() => undefined);
      if (holder && processAlive(holder.pid) && attempt === 0) {
        throw new BackupRunningError(
          `another backup of this cluster is running (${holder.what}, pid ${holder.pid}, since ${holder.since}): ` +
            'pgkeep takes one backup at a time per cluster; try again when it ends',
        );
      }
      if (attempt > 0) throw new BackupRunningError(`could not take the backup lock ${path}`);
      await rm(path, { force: true });
    }
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}
