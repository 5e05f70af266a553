/**
 * The one definition of a pid file and of "does a live process hold it", used by the spool's
 * agent pid file, the prefetch lock and the backup lock, and generated as shell for the
 * archive_command and restore_command fast paths ({@link shellLiveHolder}), so the TypeScript
 * check and the shell check cannot drift apart.
 *
 * Format: the holder's pid on the first line (decimal, no leading zero); anything after the first
 * line is a description for people (the backup lock says what runs and since when).
 */
import { readFileSync } from 'node:fs';
import { link, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

const PID_LINE = /^[1-9][0-9]*$/;

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

/** The pid a pid file's text names, or undefined when its first line is not a pid. */
export function parsePidText(text: string): number | undefined {
  const first = (text.split('\n', 1)[0] ?? '').trim();
  if (!PID_LINE.test(first)) return undefined;
  const pid = Number(first);
  return Number.isSafeInteger(pid) ? pid : undefined;
}

/** The pid the file names, or undefined when it is absent, empty or not a pid. */
export async function readPidFile(file: string): Promise<number | undefined> {
  return parsePidText(await readFile(file, 'utf8').catch(() => ''));
}

/** The running process the file names, if any. */
export async function livePidFileHolder(file: string): Promise<number | undefined> {
  const pid = await readPidFile(file);
  return pid !== undefined && processAlive(pid) ? pid : undefined;
}

export interface ClaimOptions {
  /** Written after the pid, for people reading the file. */
  readonly description?: string;
  /** A file that already names `pid` counts as held by another (a lock, not re-entrant). @default false */
  readonly exclusive?: boolean;
}

/**
 * Writes `pid` (and the description on the following line) to `file` unless a live process
 * other than `pid` holds it; true when `file` names `pid` afterwards. The content appears whole (a
 * temp file hard-linked into place, which fails if the name exists), so a reader never sees an
 * empty pid file; a pid file of a dead process, or one that names no pid, is replaced.
 */
export async function claimPidFile(file: string, pid: number, options: ClaimOptions = {}): Promise<boolean> {
  const description = options.description ?? '';
  const tmp = `${file}.${process.pid}.${pid}.tmp`;
  await writeFile(tmp, `${pid}\n${description ? `${description}\n` : ''}`, { mode: 0o600 });
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
      if (holder === pid) return !options.exclusive;
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

/**
 * A POSIX shell condition that succeeds exactly when {@link livePidFileHolder} would return a pid
 * for `quotedFile` (already shell-quoted), and leaves that pid in `$<variable>`: the first line
 * is a pid, the process exists (kill -0, or its /proc entry for a process of another user, as
 * EPERM counts in processAlive) and is not a zombie. `read` fails on a last line without a
 * newline, so the variable is tested instead of its status.
 */
export function shellLiveHolder(quotedFile: string, variable: string): string {
  const v = `$${variable}`;
  // After the case, the variable holds digits only: it needs no quotes.
  return (
    `{ { ${variable}=;read -r ${variable};} 2>/dev/null <${quotedFile};` +
    `case ${v} in ''|0*|*[!0-9]*) false;;esac&&` +
    `{ kill -0 ${v}||test -d /proc/${v};} 2>/dev/null&&! grep -qs ') Z ' /proc/${v}/stat;}`
  );
}
