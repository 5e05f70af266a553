/**
 * What `pgkeep restore --pgdata` decides before laying anything down: who owns the files when root
 * restores, and whether a target time can be reached with the WAL the repository holds.
 */
import { execFileSync } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { TargetTime } from '../../core/recovery-target-time.ts';
import type { Storage } from '../../storage/storage.ts';
import { newestArchivedSegment, scanWalArchive } from '../physical/wal-archive.ts';
import { UsageError } from './command.ts';

export function userIds(user: string): { uid: number; gid: number } {
  const id = (flag: string) => {
    try {
      return Number(
        execFileSync('id', [flag, user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(),
      );
    } catch {
      throw new UsageError(`--owner ${user}: no such user on this host; give the user PostgreSQL runs as`);
    }
  };
  return { uid: id('-u'), gid: id('-g') };
}

/**
 * As root, files left owned by root cannot be started by PostgreSQL (it refuses to run as root):
 * the owner of the directory the data directory goes in, else the postgres user, else a refusal.
 */
export async function defaultOwner(
  pgData: string,
): Promise<{ uid: number; gid: number; why: string } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  for (let dir = pgData; ; dir = dirname(dir)) {
    const info = await stat(dir).catch(() => undefined);
    if (info && dir !== pgData) {
      if (info.uid !== 0) return { uid: info.uid, gid: info.gid, why: `the owner of ${dir}` };
      break;
    }
    if (dir === '/') break;
  }
  try {
    return { ...userIds('postgres'), why: 'the postgres user' };
  } catch {
    throw new UsageError(
      `restoring as root into ${pgData}, whose parent root owns, and there is no postgres user: pass --owner USER, the user PostgreSQL runs as`,
    );
  }
}

/** A target at or after the newest archived WAL cannot be reached (see newestArchivedSegment). */
export async function assertTimeInArchive(
  storage: Storage,
  cluster: string,
  target: TargetTime,
): Promise<void> {
  const newest = newestArchivedSegment(await scanWalArchive(storage, cluster));
  if (!newest) {
    throw new Error(
      `--target-time ${target.value}: cluster "${cluster}" has no archived WAL in ${storage.displayUrl}; run pgkeep info`,
    );
  }
  if (target.epochMs >= newest.newestStoredAt.getTime()) {
    throw new Error(
      `--target-time ${target.value} is not before the newest archived WAL: segment ${newest.newestSegment} ` +
        `(timeline ${newest.timeline}) was stored at ${newest.newestStoredAt.toISOString()}, and nothing written later ` +
        'is in the archive, so recovery could not reach the target. Give a time before that, or restore to the end ' +
        'of the archive (no --target-time); pgkeep info shows the recoverable window',
    );
  }
}
