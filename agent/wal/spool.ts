/**
 * The agent's state on the host. Per cluster, `spoolDir/<cluster>/`:
 *
 *   backup.lock                held while a backup runs: one backup at a time per cluster
 *
 * and per data directory, `spoolDir/<cluster>/pgdata/<absolute physical path of the data directory>/`
 * ({@link WalSpool.root}), so that two clusters on one host (a production cluster and a test
 * restore of it, say) never share a pid file, a marker or a prefetch window:
 *
 *   agent.pid                  the pid of the agent or transient pusher of this data directory
 *   claimed/<wal file name>    that process has queued this file or is pushing it
 *   pushed/<wal file name>     marker: the file is durably stored and read back (JSON: key, sha256, size)
 *   prefetch/<boot>/<wal file name>   a WAL file fetched ahead for recovery, complete and verified
 *   prefetch.lock              the pid of the one prefetcher of this data directory
 *
 * The shell lines find the same directory from their working directory, which PostgreSQL sets to
 * the data directory (`cd -P .` makes `$PWD` the physical path, as realpath does here).
 *
 * A marker is written only after the push resolved (stored, read back, hash checked), through a
 * temp file, fsync and rename, so its presence alone means "stored". archive_command's shell fast
 * path (archiveCommandLine) trusts a marker without starting Node. Why a marker cannot hide a
 * changed segment: PostgreSQL writes a segment completely before it creates `<name>.ready`, and
 * neither rewrites nor recycles it until archive_command has succeeded for it (`.done`); the
 * service pushes only `.ready` files and removes a marker once its `.done` appears or the segment
 * is gone, so a marker exists only while the bytes under that name cannot change. As a second
 * guard the fast path also refuses a segment modified after its marker was written (`-nt`), and
 * `wal-push` itself (the slow path) compares the marker's sha256 with the file's.
 */

import { constants, readFileSync, realpathSync } from 'node:fs';
import {
  access,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { shellLiveHolder } from '../pid-lock.ts';
import { fsyncDir } from './fetch.ts';

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** The prefetch directory where the kernel has no boot id. */
const NO_BOOT_ID_DIR = 'fsynced';
const BOOT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let bootId: string | undefined | null = null;

/** The id Linux gives the running boot of the machine; undefined elsewhere. */
export function currentBootId(): string | undefined {
  if (bootId === null) {
    try {
      const id = readFileSync(BOOT_ID_FILE, 'utf8').trim();
      bootId = BOOT_ID.test(id) ? id : undefined;
    } catch {
      bootId = undefined;
    }
  }
  return bootId;
}

/** The spool cannot be used; the message names the directory, the user and the fix. */
export class SpoolError extends Error {
  override name = 'SpoolError';
}

export interface PushedMarker {
  readonly key: string;
  readonly plaintextSha256: string;
  readonly plaintextSizeBytes: number;
  /** The repository it went to (display form), so a marker for another repository is not trusted. */
  readonly repository: string;
  readonly pushedAt: string;
}

/** The cluster's part of the spool: what is one per cluster whatever the data directory (the backup lock). */
export function clusterSpoolRoot(spoolDir: string, cluster: string): string {
  return join(spoolDir, cluster);
}

/** Where the per-data-directory spools of a cluster are: the data directory's path goes below. */
function dataDirsRoot(spoolDir: string, cluster: string): string {
  return join(clusterSpoolRoot(spoolDir, cluster), 'pgdata');
}

/** The physical absolute path of a data directory (as the shell lines' `cd -P .` gives it). */
export function physicalPath(dir: string): string {
  try {
    return realpathSync.native(resolve(dir));
  } catch {
    return resolve(dir);
  }
}

export class WalSpool {
  /** The spool of this data directory. */
  readonly root: string;
  readonly pushedDir: string;
  readonly claimedDir: string;
  readonly prefetchDir: string;

  /** The configured spool directory, above every cluster's and data directory's part. */
  readonly spoolDir: string;

  constructor(spoolDir: string, cluster: string, dataDir: string) {
    this.spoolDir = spoolDir;
    this.root = join(dataDirsRoot(spoolDir, cluster), physicalPath(dataDir));
    this.pushedDir = join(this.root, 'pushed');
    this.claimedDir = join(this.root, 'claimed');
    this.prefetchDir = join(this.root, 'prefetch');
  }

  /**
   * Holds the pid of the running `pgkeep agent`, or of the transient `pgkeep wal-pusher`
   * (agent/pid-lock.ts): archive_command and wal-push wait for its markers only then.
   */
  get agentPidFile(): string {
    return join(this.root, 'agent.pid');
  }

  /**
   * Creates the spool (0700) if needed and proves this user can write it. Without it every
   * archive_command would take the slow path and no transient pusher could start, silently; so a
   * spool that cannot be written is an error that names the fix.
   */
  async ensureWritable(): Promise<void> {
    try {
      await mkdir(this.root, { recursive: true, mode: 0o700 });
      await access(this.root, constants.W_OK | constants.X_OK);
    } catch (error) {
      const { username, uid } = userInfo();
      const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      throw new SpoolError(
        `spool directory ${this.root} cannot be created or written by user ${username} (uid ${uid}): ${code}. ` +
          `Create it for that user, as root: install -d -o ${username} -g ${username} -m 0700 ${this.spoolDir} ` +
          '(or set spoolDir / PGKEEP_SPOOL_DIR to a directory this user owns)',
        { cause: error },
      );
    }
  }

  claimPath(walFileName: string): string {
    return join(this.claimedDir, walFileName);
  }

  /** Says that the holder of the pid file is going to push `walFileName`: wal-push waits for it. */
  async claim(walFileName: string): Promise<void> {
    await mkdir(this.claimedDir, { recursive: true, mode: 0o700 });
    await writeFile(this.claimPath(walFileName), '');
  }

  async unclaim(walFileName: string): Promise<void> {
    await rm(this.claimPath(walFileName), { force: true });
  }

  /** Forgets every claim: for a new holder of the pid file, whose predecessor's claims are void. */
  async clearClaims(): Promise<void> {
    await rm(this.claimedDir, { recursive: true, force: true });
  }

  async claimed(walFileName: string): Promise<boolean> {
    return stat(this.claimPath(walFileName)).then(
      () => true,
      () => false,
    );
  }

  markerPath(walFileName: string): string {
    return join(this.pushedDir, walFileName);
  }

  async readMarker(walFileName: string): Promise<PushedMarker | undefined> {
    try {
      return JSON.parse(await readFile(this.markerPath(walFileName), 'utf8')) as PushedMarker;
    } catch {
      return undefined;
    }
  }

  /**
   * Records that `walFileName` is stored. `segmentPath` is the file that was pushed: the marker's
   * modification time is kept no older than the segment's, for the fast path's `-nt` guard.
   */
  async markPushed(walFileName: string, marker: PushedMarker, segmentPath?: string): Promise<void> {
    await mkdir(this.pushedDir, { recursive: true, mode: 0o700 });
    const path = this.markerPath(walFileName);
    const tmp = `${path}.${process.pid}.tmp`;
    const handle = await open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(marker)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (segmentPath) {
      const segment = await stat(segmentPath).catch(() => undefined);
      const mine = await stat(tmp);
      if (segment && segment.mtimeMs > mine.mtimeMs) await utimes(tmp, segment.atime, segment.mtime);
    }
    await rename(tmp, path);
    await fsyncDir(this.pushedDir);
  }

  async removeMarker(walFileName: string): Promise<void> {
    await rm(this.markerPath(walFileName), { force: true });
  }

  async listMarkers(): Promise<string[]> {
    try {
      return (await readdir(this.pushedDir)).filter((n) => !n.endsWith('.tmp'));
    } catch {
      return [];
    }
  }

  /**
   * Where prefetched files are kept: a directory per boot of the machine. They are not fsynced
   * (recovery reads each one at once and PostgreSQL does not need restore_command's output on
   * disk), so after a crash of the machine one could be incomplete under its final name; files
   * of an earlier boot are never taken. Without a boot id (not Linux) files are fsynced and kept
   * in `prefetch/fsynced`.
   */
  get prefetchBootDir(): string {
    return join(this.prefetchDir, currentBootId() ?? NO_BOOT_ID_DIR);
  }

  /** Whether prefetched files must be flushed to disk: see {@link prefetchBootDir}. */
  get prefetchDurable(): boolean {
    return currentBootId() === undefined;
  }

  prefetchPath(walFileName: string): string {
    return join(this.prefetchBootDir, walFileName);
  }

  /** Holds the pid of the data directory's one prefetcher (see prefetch.ts). */
  get prefetchLockFile(): string {
    return join(this.root, 'prefetch.lock');
  }
}

export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

export interface CommandLineOptions {
  /** The Node.js binary (22.15 or later). */
  readonly nodePath: string;
  /** The installed bundle, dist/pgkeep.mjs. */
  readonly bundlePath: string;
  readonly spoolDir: string;
  readonly cluster: string;
  /** Passed as PGKEEP_CONFIG when given. */
  readonly configPath?: string;
  /** Extra environment for the command (only names and non-secret values: the line is in postgresql.conf). */
  readonly env?: Readonly<Record<string, string>>;
}

/** The value of a simple shell word: left bare when it needs no quoting (the lines must stay short). */
function shellWord(value: string): string {
  return /^[A-Za-z0-9_./:=@+-]+$/.test(value) ? value : shellQuote(value);
}

/** Runs pgkeep; the line has set S to the spool directory ({@link shellSpoolRoot}). */
function invocation(options: CommandLineOptions, args: string): string {
  const env = {
    ...(options.configPath ? { PGKEEP_CONFIG: options.configPath } : {}),
    ...options.env,
  };
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${shellWord(v)} `);
  // NODE_COMPILE_CACHE: Node caches the compiled bundle there (a third of a cold start is
  // compiling pgkeep.mjs). PGKEEP_SPOOL_DIR: the same spool as the configuration names; set
  // here, pgkeep reuses its validated configuration from it instead of loading zod and yaml at
  // every call (agent/config.ts).
  return `NODE_COMPILE_CACHE="$S"/node-compile-cache PGKEEP_SPOOL_DIR="$S" ${assignments.join('')}${shellWord(options.nodePath)} ${shellWord(options.bundlePath)} ${args}`;
}

/**
 * PostgreSQL 15 expands archive_command into a buffer of 1024 bytes (MAXPGPATH) and cuts the
 * rest off, which leaves a broken shell line that fails every segment.
 */
const COMMAND_MAX_BYTES = 1023;

/** Throws when `line`, with its %p and %f expanded as PostgreSQL does, could be cut off. */
function assertFits(line: string, what: string): string {
  const expanded = line.replaceAll('%p', `pg_wal/${'0'.repeat(40)}`).replaceAll('%f', '0'.repeat(40));
  if (Buffer.byteLength(expanded) > COMMAND_MAX_BYTES) {
    throw new Error(
      `the ${what} line would be ${Buffer.byteLength(expanded)} bytes with a WAL file name in it, over PostgreSQL's ` +
        `limit of ${COMMAND_MAX_BYTES + 1}: install Node, pgkeep, the spool and the config under shorter paths`,
    );
  }
  return line;
}
/** How long the shell lines wait at most for the agent or prefetcher before doing the work themselves. */
export const AGENT_WAIT_SECONDS = 10;

/**
 * How long archive_command's shell line waits for the agent to claim a segment it has not
 * claimed yet: the agent sees `.ready` within milliseconds (inotify), and a segment it does not
 * handle (another pg_wal, a stuck agent) must not stall the archiver.
 */
export const CLAIM_GRACE_SECONDS = 0.2;

/**
 * Shell that sets R to this data directory's spool ({@link WalSpool.root}): the working directory
 * is the data directory, and `cd -P .` makes `$PWD` its physical path.
 */
/**
 * The cluster an archive_command line pgkeep printed archives under, or undefined: read back from
 * the part {@link shellSpoolRoot} writes (`R="$S"/<cluster>/pgdata"$PWD"`), or from the marker
 * path of lines printed before the spool was keyed by data directory (`<spool>/<cluster>/pushed/%f`).
 */
export function archiveLineCluster(line: string): string | undefined {
  return (
    /R="\$S"'?\/([a-z0-9][a-z0-9-]{0,62})\/pgdata/.exec(line)?.[1] ??
    /\/([a-z0-9][a-z0-9-]{0,62})\/pushed'?\/%f/.exec(line)?.[1]
  );
}

function shellSpoolRoot(options: CommandLineOptions): string {
  const perDataDir = dataDirsRoot(options.spoolDir, options.cluster).slice(options.spoolDir.length);
  return `cd -P .;S=${shellWord(options.spoolDir)};R="$S"${shellWord(perDataDir)}"$PWD"`;
}

/**
 * The archive_command value, a small POSIX shell program that never starts Node when the agent
 * does the work:
 *
 * 1. the agent already pushed the segment (marker present, segment not newer than it): exit 0;
 * 2. the agent of this data directory is running (its pid file names a live process, not a
 *    zombie: agent/pid-lock.ts shellLiveHolder) and claims the segment within
 *    {@link CLAIM_GRACE_SECONDS}: wait for its marker while the claim stands, polling, up to
 *    {@link AGENT_WAIT_SECONDS}, and exit 0 when it appears;
 * 3. otherwise (no agent, a segment it does not push, or it did not deliver): `pgkeep wal-push
 *    %p`, told not to wait for the agent again.
 *
 * In postgresql.conf it needs its single quotes doubled (see {@link postgresqlConfString}).
 */
export function archiveCommandLine(options: CommandLineOptions): string {
  // Polls every 10 ms: the agent's push usually lands within tens of milliseconds of `.ready`.
  const polls = AGENT_WAIT_SECONDS * 100;
  const grace = Math.round(CLAIM_GRACE_SECONDS * 100);
  const line = [
    shellSpoolRoot(options),
    'W=%p',
    'M="$R"/pushed/%f',
    // d: the marker says the segment is stored (and the segment is not newer than it): done.
    'd(){ test -f "$M"&&test ! "$W" -nt "$M"&&exit 0;}',
    'd',
    `if ${shellLiveHolder('"$R"/agent.pid', 'A')};then n=0;while [ $n -lt ${polls} ]&&kill -0 $A 2>/dev/null&&{ test -f "$R"/claimed/%f||[ $n -lt ${grace} ];};do d;sleep 0.01;n=$((n+1));done;d;fi`,
    invocation({ ...options, env: { PGKEEP_NO_AGENT_WAIT: '1', ...options.env } }, 'wal-push "$W"'),
  ].join(';');
  return assertFits(line, 'archive_command');
}

/** How often restore_command's shell line looks for a segment the prefetcher is downloading. */
const PREFETCH_POLL_SECONDS = 0.01;

/**
 * The restore_command value, a small POSIX shell program:
 *
 * 1. a prefetched file is there: move it into place without starting Node (a prefetched file is
 *    complete and verified; `mv` is a rename when the spool and pg_wal share a file system);
 * 2. the live prefetcher of this data directory (agent/pid-lock.ts shellLiveHolder) has the
 *    segment in its window (its temp file for it exists, named with the pid in prefetch.lock): wait for it, polling, up to {@link AGENT_WAIT_SECONDS}, then 1;
 * 3. otherwise `pgkeep wal-fetch %f %p`, which also starts the prefetcher.
 */
export function restoreCommandLine(options: CommandLineOptions): string {
  const polls = Math.round(AGENT_WAIT_SECONDS / PREFETCH_POLL_SECONDS);
  const prefetching = `${shellLiveHolder('"$R"/prefetch.lock', 'P')}&&test -e "$F.pgkeep-$P.tmp"`;
  const line = [
    shellSpoolRoot(options),
    // The directory of this boot (WalSpool.prefetchBootDir), found the same way as currentBootId.
    `B=;{ read B;} 2>/dev/null <${BOOT_ID_FILE}`,
    `case $B in ????????-????-????-????-????????????);;*) B=${NO_BOOT_ID_DIR};;esac`,
    `F="$R"/prefetch/"$B"/%f`,
    // t: a prefetched file is there: move it into place.
    't(){ test -f "$F"&&mv -f "$F" %p&&exit 0;}',
    't',
    `n=0;while [ $n -lt ${polls} ]&&${prefetching};do sleep ${PREFETCH_POLL_SECONDS};n=$((n+1));done`,
    't',
    invocation(options, 'wal-fetch %f %p'),
  ].join(';');
  return assertFits(line, 'restore_command');
}

/** A value quoted for postgresql.conf. */
export function postgresqlConfString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
