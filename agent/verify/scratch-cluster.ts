/**
 * The throw-away PostgreSQL cluster a verification restores into. It lives in one private
 * directory (mode 0700) that holds the data directory, the unix socket and the fetched WAL; it
 * listens on no TCP address, runs as `postgres` when the verifier runs as root, and starts from a
 * configuration pgkeep writes, never the one that came with a backup. The server gets a minimal
 * environment: the verifier's credentials (S3, KMS) never reach a process that runs restored data.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type PgEnv, pgProgram, queryRows } from '../postgres.ts';
import { postgresqlConfString } from '../wal/spool.ts';

const execFileAsync = promisify(execFile);

export type ServerUser = { readonly uid: number; readonly gid: number } | undefined;

/** The user PostgreSQL must run as: `postgres` when we are root (it refuses to run as root), else ourselves. */
export async function serverUserFor(uid: number | undefined = process.getuid?.()): Promise<ServerUser> {
  if (uid !== 0) return undefined;
  try {
    const id = async (flag: string) => Number((await execFileAsync('id', [flag, 'postgres'])).stdout.trim());
    return { uid: await id('-u'), gid: await id('-g') };
  } catch {
    throw new Error(
      'pgkeep verify runs as root but there is no "postgres" system user to run the scratch cluster as: ' +
        'install the PostgreSQL server package, or run verify as an unprivileged user',
    );
  }
}

/** A port no other process listens on; the server uses it only to name its socket. */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 5432));
    });
  });
}

/** The whole postgresql.conf of a scratch cluster. */
export function scratchPostgresqlConf(
  port: number,
  socketDir: string,
  options: { logical?: boolean } = {},
): string {
  return `${[
    "# Written by pgkeep verify. A backup's own postgresql.conf and postgresql.auto.conf are never used:",
    '# no preloaded libraries, no archiving, no TCP listener.',
    "listen_addresses = ''",
    `port = ${port}`,
    `unix_socket_directories = ${postgresqlConfString(socketDir)}`,
    'unix_socket_permissions = 0700',
    "shared_preload_libraries = ''",
    "session_preload_libraries = ''",
    "local_preload_libraries = ''",
    'archive_mode = off',
    "archive_command = ''",
    // Hot standby would require the source's max_connections & co.; nothing connects during recovery.
    'hot_standby = off',
    'max_connections = 20',
    // A scratch cluster is removed after the checks: durability buys nothing here.
    'fsync = off',
    'synchronous_commit = off',
    'autovacuum = off',
    'jit = off',
    'track_commit_timestamp = on',
    // Tuned for one big restore: index builds (and pg_amcheck's heapallindexed) use
    // maintenance_work_mem; few checkpoints while loading.
    "maintenance_work_mem = '256MB'",
    "max_wal_size = '4GB'",
    "checkpoint_timeout = '30min'",
    // A dump is restored in one transaction that creates its tables: with minimal WAL their data
    // is not written twice. Recovery of a base backup needs the WAL level it was taken with.
    ...(options.logical ? ["wal_level = 'minimal'", 'max_wal_senders = 0'] : []),
    "log_destination = 'stderr'",
    'logging_collector = off',
    "timezone = 'UTC'",
    "log_timezone = 'UTC'",
  ].join('\n')}\n`;
}

/** Trust on the private socket only: the directory (0700) is the access control. */
export const SCRATCH_HBA_CONF = 'local all all trust\n';

export interface ScratchDirs {
  readonly root: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly walDir: string;
  readonly tablespaceDir: string;
  readonly port: number;
  readonly user: ServerUser;
}

/** Makes the private directory tree (0700, owned by the server's user). */
export async function makeScratchDirs(workRoot: string, user: ServerUser): Promise<ScratchDirs> {
  await mkdir(workRoot, { recursive: true });
  const root = await mkdtemp(join(workRoot, 'pgkeep-verify-'));
  const dirs = {
    root,
    dataDir: join(root, 'data'),
    socketDir: join(root, 'socket'),
    walDir: join(root, 'wal'),
    tablespaceDir: join(root, 'tablespaces'),
  };
  for (const dir of [root, dirs.socketDir, dirs.walDir, dirs.tablespaceDir]) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
    if (user) await chown(dir, user.uid, user.gid);
  }
  if (user) {
    // Every directory above the work dir must let the server's user through; say so plainly
    // rather than let initdb fail with "permission denied".
    try {
      await execFileAsync('test', ['-w', root], { ...user, cwd: '/' });
    } catch {
      await rm(root, { recursive: true, force: true });
      throw new Error(
        `the postgres user cannot reach the scratch directory ${root}: give a --work-dir whose parent directories postgres may traverse (for example /tmp or /var/tmp)`,
      );
    }
  }
  return { ...dirs, port: await freePort(), user };
}

/** libpq settings that reach the scratch cluster as `user` over its socket, and nothing else. */
export function scratchPgEnv(dirs: ScratchDirs, pgBin: string | undefined, user = 'postgres'): PgEnv {
  return {
    pgBin,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      PGHOST: dirs.socketDir,
      PGPORT: String(dirs.port),
      PGUSER: user,
      PGDATABASE: 'template1',
      PGCONNECT_TIMEOUT: '10',
      // Per-role or per-database settings a restored base backup carries cannot load libraries
      // into the superuser's sessions (only a superuser may override them, and needs to).
      ...(user === 'postgres'
        ? { PGOPTIONS: '-c session_preload_libraries= -c local_preload_libraries=' }
        : {}),
    },
  };
}

export async function initScratchCluster(dirs: ScratchDirs, pgBin: string | undefined): Promise<void> {
  await execFileAsync(
    pgProgram({ pgBin, env: {} }, 'initdb'),
    ['-D', dirs.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'],
    { ...(dirs.user ?? {}), cwd: dirs.root, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
  );
}

/** A running scratch server and its log. */
export class ScratchServer {
  readonly #child: ChildProcess;
  #log = '';
  readonly exited: Promise<number | null>;

  constructor(dirs: ScratchDirs, pgBin: string | undefined) {
    this.#child = spawn(pgProgram({ pgBin, env: {} }, 'postgres'), ['-D', dirs.dataDir], {
      ...(dirs.user ?? {}),
      cwd: dirs.root,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', TZ: 'UTC' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const collect = (d: Buffer) => {
      // Keeps the start (where recovery reports its target) and the end of a long log.
      this.#log = this.#log.length < 4 * 1024 * 1024 ? this.#log + d.toString() : this.#log;
    };
    this.#child.stdout?.on('data', collect);
    this.#child.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => {
      this.#child.once('error', () => resolve(null));
      this.#child.once('exit', (code) => resolve(code));
    });
  }

  get log(): string {
    return this.#log;
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /**
   * Waits until the server accepts connections and is out of recovery; resolves false if it exits
   * first (the log says why), rejects after `timeoutMs` or on `signal`.
   */
  async waitOpen(pg: PgEnv, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      signal?.throwIfAborted();
      if (!this.running) return false;
      const state = await queryRows(pg, 'select pg_catalog.pg_is_in_recovery()').catch(() => undefined);
      if (state?.[0]?.[0] === 'f') return true;
      if (Date.now() > deadline) {
        throw new Error(
          `the scratch cluster did not finish recovery within ${Math.round(timeoutMs / 1000)} s: ` +
            'raise the timeout for large backups; server log:\n' +
            this.#log.slice(-2000),
        );
      }
      await sleep(200);
    }
  }

  /** Stops the server: fast shutdown, then immediate, then SIGKILL; resolves once it is gone. */
  async stop(): Promise<void> {
    for (const [sig, waitMs] of [
      ['SIGINT', 30_000],
      ['SIGQUIT', 10_000],
      ['SIGKILL', 10_000],
    ] as const) {
      if (!this.running) return;
      this.#child.kill(sig);
      // Unreferenced: a pending timer must not keep the process alive once the server is gone.
      await Promise.race([this.exited, sleep(waitMs, undefined, { ref: false })]);
    }
  }
}

/** Removes the scratch directory; the server must be stopped first. */
export async function removeScratch(dirs: ScratchDirs): Promise<void> {
  await rm(dirs.root, { recursive: true, force: true });
}
