/**
 * Running PostgreSQL's own programs (psql, pg_dump, pg_restore, …). Connection settings reach
 * them only through the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD/PGPASSFILE, …),
 * never through argv, so a password is never visible in the process list.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Transform, Writable } from 'node:stream';
import { checkedOutput, collectTail, describeExit, exitOf } from './child-process.ts';

/** A PostgreSQL program failed; the message carries the tail of its stderr. */
export class PostgresCommandError extends Error {
  override name = 'PostgresCommandError';
}

export interface PgEnv {
  /** Directory of the PostgreSQL programs; undefined = found on PATH. */
  readonly pgBin?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
}

export function pgProgram(pg: PgEnv, name: string): string {
  return pg.pgBin ? join(pg.pgBin, name) : name;
}

/** Runs one SQL statement with psql and returns the rows, each a list of column values. */
export async function queryRows(pg: PgEnv, sql: string, database?: string): Promise<string[][]> {
  const env = { ...pg.env, ...(database ? { PGDATABASE: database } : {}) };
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      pgProgram(pg, 'psql'),
      ['-X', '-A', '-t', '-q', '-F', '\x1f', '-v', 'ON_ERROR_STOP=1', '-c', sql],
      { env, maxBuffer: 16 * 1024 * 1024 },
      (error, out, err) => {
        if (error) {
          reject(
            new PostgresCommandError(`psql failed: ${err.trim() || error.message}${hintFor(err)}`, {
              cause: error,
            }),
          );
        } else resolve(out);
      },
    );
  });
  return stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split('\x1f'));
}

function hintFor(stderr: string): string {
  if (/could not connect|Connection refused|No such file or directory/.test(stderr)) {
    return ' (set PGHOST/PGPORT to reach the server)';
  }
  if (/password authentication failed|no password supplied/.test(stderr)) {
    return ' (set PGUSER and PGPASSFILE, or a .pgpass, for a role that may connect)';
  }
  return '';
}

/** Quotes an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quotes an SQL string literal. */
export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

export interface ServerFacts {
  readonly versionNum: number;
  readonly systemIdentifier: string;
}

export async function serverFacts(pg: PgEnv): Promise<ServerFacts> {
  const [row] = await queryRows(
    pg,
    "select current_setting('server_version_num'), (select system_identifier from pg_control_system())",
  );
  if (!row?.[0] || !row[1])
    throw new PostgresCommandError('could not read the server version and system identifier');
  return { versionNum: Number(row[0]), systemIdentifier: row[1] };
}

export async function listDatabases(pg: PgEnv): Promise<string[]> {
  const rows = await queryRows(
    pg,
    'select datname from pg_database where datallowconn and not datistemplate order by datname',
  );
  return rows.map((r) => r[0] as string);
}

/**
 * Spawns a program whose stdout is the data. The returned stream ends only if the program exits 0;
 * otherwise it fails, before ending, with the program's stderr — so a dump that died half-way
 * can never be stored as if it were complete.
 */
export function spawnProducer(
  pg: PgEnv,
  program: string,
  args: readonly string[],
  extraEnv: Record<string, string> = {},
): { child: ChildProcess; output: Transform } {
  const child = spawn(pgProgram(pg, program), args, {
    env: { ...pg.env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = checkedOutput(child, (detail) => new PostgresCommandError(`${program} ${detail}`));
  return { child, output };
}

/**
 * Spawns a program whose stdout is `stdout` (another process's stdin: the data never passes
 * through this process); `done` resolves when it exits 0 and rejects with its stderr otherwise.
 */
export function spawnProducerInto(
  pg: PgEnv,
  program: string,
  args: readonly string[],
  extraEnv: Record<string, string>,
  stdout: Writable,
): { child: ChildProcess; done: Promise<void> } {
  const child = spawn(pgProgram(pg, program), args, {
    env: { ...pg.env, ...extraEnv },
    stdio: ['ignore', stdout, 'pipe'],
  });
  const stderr = collectTail(child);
  const done = exitOf(child).then(({ code, signal }) => {
    if (code !== 0)
      throw new PostgresCommandError(`${program} ${describeExit(code, signal)}: ${stderr().trim()}`);
  });
  return { child, done };
}

/**
 * Spawns a program that consumes data on stdin; `done` resolves when it exits 0 and rejects with
 * its stderr otherwise.
 */
export function spawnConsumer(
  pg: PgEnv,
  program: string,
  args: readonly string[],
  extraEnv: Record<string, string> = {},
): { child: ChildProcess; done: Promise<void> } {
  const child = spawn(pgProgram(pg, program), args, {
    env: { ...pg.env, ...extraEnv },
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  const stderr = collectTail(child);
  const done = exitOf(child).then(({ code, signal }) => {
    if (code !== 0)
      throw new PostgresCommandError(`${program} ${describeExit(code, signal)}: ${stderr().trim()}`);
  });
  return { child, done };
}
