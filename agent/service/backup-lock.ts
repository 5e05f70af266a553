/**
 * One backup at a time per cluster, across processes: the service's schedules and a `pgkeep
 * basebackup` run by hand take the same lock file in the spool. A lock whose process is gone (a
 * crash, SIGKILL) is taken over.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { claimPidFile, livePidFileHolder, releasePidFile } from '../pid-lock.ts';

export class BackupRunningError extends Error {
  override name = 'BackupRunningError';
}

/** Runs `fn` holding the cluster's backup lock; rejects with {@link BackupRunningError} if another holds it. */
export async function withBackupLock<T>(spoolRoot: string, what: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(spoolRoot, { recursive: true, mode: 0o700 });
  const path = join(spoolRoot, 'backup.lock');
  const description = `${what} since ${new Date().toISOString()}`;
  if (!(await claimPidFile(path, process.pid, { description, exclusive: true }))) {
    const holder = await livePidFileHolder(path);
    const said = (await readFile(path, 'utf8').catch(() => '')).split('\n')[1]?.trim() || 'unknown';
    throw new BackupRunningError(
      `another backup of this cluster is running (${said}, pid ${holder ?? 'unknown'}): ` +
        'pgkeep takes one backup at a time per cluster; try again when it ends',
    );
  }
  try {
    return await fn();
  } finally {
    await releasePidFile(path, process.pid);
  }
}
