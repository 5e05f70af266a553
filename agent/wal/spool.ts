/**
 * The agent's state on the host, under `spoolDir/<cluster>/`:
 *
 *   pushed/<wal file name>     marker: the file is durably stored and read back (JSON: key, sha256, size)
 *   prefetch/<boot>/<wal file name>   a WAL file fetched ahead for recovery, complete and verified
 *   backup.lock                held while a backup runs: one backup at a time per cluster
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

import { readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
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

export interface PushedMarker {
  readonly key: string;
  readonly plaintextSha256: string;
  readonly plaintextSizeBytes: number;
  /** The repository it went to (display form), so a marker for another repository is not trusted. */
  readonly repository: string;
  readonly pushedAt: string;
}

export class WalSpool {
  readonly root: string;
  readonly pushedDir: string;
  readonly prefetchDir: string;

  constructor(spoolDir: string, cluster: string) {
    this.root = join(spoolDir, cluster);
    this.pushedDir = join(this.root, 'pushed');
    this.prefetchDir = join(this.root, 'prefetch');
  }

  /**
   * Holds the pid of the running `pgkeep agent`, or of the transient `pgkeep wal-pusher`
   * (agent/wal/pid-file.ts): archive_command and wal-push wait for its markers only then.
   */
  get agentPidFile(): string {
    return join(this.root, 'agent.pid');
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

  /** Holds the pid of the cluster's one prefetcher (see prefetch.ts). */
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

function invocation(options: CommandLineOptions, args: string): string {
  const env = {
    // Node caches the compiled bundle there: a third of a cold start is compiling pgkeep.mjs.
    NODE_COMPILE_CACHE: join(options.spoolDir, 'node-compile-cache'),
    // The same spool as the configuration names; set here, pgkeep reuses its validated
    // configuration from it instead of loading zod and yaml at every call (agent/config.ts).
    PGKEEP_SPOOL_DIR: options.spoolDir,
    ...(options.configPath ? { PGKEEP_CONFIG: options.configPath } : {}),
    ...options.env,
  };
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)} `);
  return `${assignments.join('')}${shellQuote(options.nodePath)} ${shellQuote(options.bundlePath)} ${args}`;
}

/** How long archive_command waits for a running agent to push a file before pushing it itself. */
export const AGENT_WAIT_SECONDS = 10;

/**
 * The archive_command value, a small POSIX shell program that never starts Node when the agent
 * does the work:
 *
 * 1. the agent already pushed the segment (marker present, segment not newer than it): exit 0;
 * 2. the agent is running (its pid file names a live process of this user, not a zombie): wait for its marker,
 *    polling, up to {@link AGENT_WAIT_SECONDS}, and exit 0 when it appears;
 * 3. otherwise (no agent, or it did not deliver in time): `pgkeep wal-push %p`, told not to wait
 *    for the agent again.
 *
 * In postgresql.conf it needs its single quotes doubled (see {@link postgresqlConfString}).
 */
export function archiveCommandLine(options: CommandLineOptions): string {
  const spool = new WalSpool(options.spoolDir, options.cluster);
  // Polls every 10 ms: the agent's push usually lands within tens of milliseconds of `.ready`.
  const polls = AGENT_WAIT_SECONDS * 100;
  return [
    `M=${shellQuote(spool.pushedDir)}/%f`,
    `{ test -f "$M" && test ! %p -nt "$M"; } && exit 0`,
    `if A=$(cat ${shellQuote(spool.agentPidFile)} 2>/dev/null) && kill -0 "$A" 2>/dev/null && ! grep -qs ') Z ' "/proc/$A/stat"; then n=0; while [ $n -lt ${polls} ] && kill -0 "$A" 2>/dev/null; do { test -f "$M" && test ! %p -nt "$M"; } && exit 0; sleep 0.01; n=$((n+1)); done; fi`,
    invocation({ ...options, env: { PGKEEP_NO_AGENT_WAIT: '1', ...options.env } }, 'wal-push %p'),
  ].join('; ');
}

/** How often restore_command's shell line looks for a segment the prefetcher is downloading. */
const PREFETCH_POLL_SECONDS = 0.01;

/**
 * The restore_command value, a small POSIX shell program:
 *
 * 1. a prefetched file is there: move it into place without starting Node (a prefetched file is
 *    complete and verified; `mv` is a rename when the spool and pg_wal share a file system);
 * 2. the live prefetcher (not a zombie) has the segment in its window (its temp file for it exists, named with
 *    the pid in prefetch.lock): wait for it, polling, up to {@link AGENT_WAIT_SECONDS}, then 1;
 * 3. otherwise `pgkeep wal-fetch %f %p`, which also starts the prefetcher.
 */
export function restoreCommandLine(options: CommandLineOptions): string {
  const spool = new WalSpool(options.spoolDir, options.cluster);
  const take = `{ test -f "$F" && mv -f "$F" %p; } && exit 0`;
  const polls = Math.round(AGENT_WAIT_SECONDS / PREFETCH_POLL_SECONDS);
  // `read` fails on a last line without a newline, so P is tested instead of its status.
  const prefetching = `{ P=; read P; test -n "$P"; } 2>/dev/null <${shellQuote(spool.prefetchLockFile)} && test -e "$F.pgkeep-$P.tmp" && kill -0 "$P" 2>/dev/null && ! grep -qs ') Z ' "/proc/$P/stat"`;
  return [
    // The directory of this boot (WalSpool.prefetchBootDir), found the same way as currentBootId.
    `B=; { read B; } 2>/dev/null <${BOOT_ID_FILE}`,
    `case $B in ????????-????-????-????-????????????) ;; *) B=${NO_BOOT_ID_DIR};; esac`,
    `F=${shellQuote(spool.prefetchDir)}/"$B"/%f`,
    take,
    `n=0; while [ $n -lt ${polls} ] && ${prefetching}; do sleep ${PREFETCH_POLL_SECONDS}; n=$((n+1)); done`,
    take,
    invocation(options, 'wal-fetch %f %p'),
  ].join('; ');
}

/** A value quoted for postgresql.conf. */
export function postgresqlConfString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
