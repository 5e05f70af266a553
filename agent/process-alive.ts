import { readFileSync } from 'node:fs';

/**
 * Whether a process with this pid runs. EPERM means it exists but belongs to another user, which
 * still counts: a lock or pid file must not be taken over from a live process. A zombie does not
 * count: a holder killed before it could remove its lock or pid file stays one until reaped, and
 * where nothing reaps orphans (some container inits) that is forever.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true; // no /proc: trust kill(0)
  }
  // "pid (comm) state …"; comm may itself contain parentheses.
  const end = stat.lastIndexOf(')');
  return stat.slice(end + 2, end + 3) !== 'Z';
}
