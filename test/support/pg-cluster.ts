/**
 * Real PostgreSQL clusters for integration tests: `initdb` in a temp directory, `postgres` on a free
 * port on 127.0.0.1. PostgreSQL refuses to run as root, so when the tests run as root the cluster
 * runs as the `postgres` system user (which the Debian packages create).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** uid/gid to run PostgreSQL as: `postgres` when we are root, ourselves otherwise. */
async function serverUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const { stdout } = await execFileAsync('id', ['-u', 'postgres']);
  const { stdout: gid } = await execFileAsync('id', ['-g', 'postgres']);
  return { uid: Number(stdout.trim()), gid: Number(gid.trim()) };
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A temp directory the cluster's user may write to (tests run as root; PostgreSQL cannot). */
export async function makeServerDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const user = await serverUser();
  if (user) await chown(dir, user.uid, user.gid);
  await chmod(dir, 0o700);
  return dir;
}

export interface PgCluster {
  readonly port: number;
  readonly dataDir: string;
  /** libpq variables that reach this cluster as its superuser. */
  readonly env: Record<string, string>;
  /** Runs SQL through psql and returns its unaligned, tuples-only output (trimmed). */
  sql(sql: string, database?: string): Promise<string>;
  start(): Promise<void>;
  /** `fast` shuts down cleanly; `immediate` is a crash for recovery purposes. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stops the server and removes the data directory. */
  destroy(): Promise<void>;
  /** The server's log so far, for assertion messages. */
  log(): string;
}

export interface ClusterOptions {
  /** postgresql.conf settings, passed as `-c name=value`. */
  readonly settings?: Record<string, string | number>;
  /** Extra environment for the server process (its archive_command inherits it). */
  readonly serverEnv?: Record<string, string>;
}

/** initdb a new cluster and start it. */
export async function startCluster(options: ClusterOptions = {}): Promise<PgCluster> {
  const dataDir = join(await makeServerDir('pgkeep-pg-'), 'data');
  const user = await serverUser();
  await run(
    join(PG_BIN, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C.UTF-8'],
    user,
  );
  return await startExistingCluster(dataDir, options);
}

/** Start a server on a data directory that already exists (for example one laid down by a restore). */
export async function startExistingCluster(
  dataDir: string,
  options: ClusterOptions = {},
): Promise<PgCluster> {
  const user = await serverUser();
  if (user) await run('chown', ['-R', `${user.uid}:${user.gid}`, dataDir], undefined);
  const port = await freePort();
  const socketDir = await makeServerDir('pgkeep-sock-');
  const env = { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGDATABASE: 'postgres' };
  let child: ChildProcess | undefined;
  let logText = '';
  const settings = {
    listen_addresses: '127.0.0.1',
    port,
    unix_socket_directories: socketDir,
    fsync: 'off',
    ...options.settings,
  };
  const args = ['-D', dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];

  const cluster: PgCluster = {
    port,
    dataDir,
    env,
    async sql(sql, database = 'postgres') {
      const { stdout } = await execFileAsync(
        join(PG_BIN, 'psql'),
        ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', database, '-c', sql],
        { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
      );
      return stdout.trim();
    },
    async start() {
      child = spawn(join(PG_BIN, 'postgres'), args, {
        ...(user ?? {}),
        env: { ...process.env, ...options.serverEnv },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout?.on('data', (d: Buffer) => {
        logText += d.toString();
      });
      child.stderr?.on('data', (d: Buffer) => {
        logText += d.toString();
      });
      const exited = new Promise<never>((_, reject) =>
        child?.once('exit', (code) =>
          reject(new Error(`postgres exited with code ${code} while starting:\n${logText.slice(-4000)}`)),
        ),
      );
      await Promise.race([waitReady(port), exited]);
      child.removeAllListeners('exit');
    },
    async stop(mode = 'fast') {
      const proc = child;
      child = undefined;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill(mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
      await exited;
    },
    async destroy() {
      await cluster.stop('immediate');
      await rm(join(dataDir, '..'), { recursive: true, force: true });
      await rm(socketDir, { recursive: true, force: true });
    },
    log: () => logText,
  };
  await cluster.start();
  return cluster;
}

async function waitReady(port: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      await execFileAsync(join(PG_BIN, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port)]);
      // pg_isready answers during recovery too; a query tells us the server accepts connections.
      await execFileAsync(join(PG_BIN, 'psql'), [
        '-X',
        '-h',
        '127.0.0.1',
        '-p',
        String(port),
        '-U',
        'postgres',
        '-c',
        'select 1',
        'postgres',
      ]);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`postgres on port ${port} did not accept connections within 60 s`);
}

async function run(
  file: string,
  args: string[],
  user: { uid: number; gid: number } | undefined,
): Promise<void> {
  await execFileAsync(file, args, { ...(user ?? {}), cwd: tmpdir() });
}

/** Finishes `count` WAL segments of `cluster` (a little data in each, then a switch); their names. */
export async function finishSegments(cluster: PgCluster, count: number, table = 't'): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    await cluster.sql(`insert into ${table} select g from generate_series(1, 1000) g`);
    names.push(await cluster.sql('select pg_walfile_name(pg_switch_wal())'));
  }
  return names;
}
