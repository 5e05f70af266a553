/**
 * The checks run on a restored scratch cluster: pg_amcheck, per-table row counts, the newest
 * commit reached, and the operator's SQL assertions. Each returns what it found; none throws for
 * what it finds wrong (a failed check is a result, not an error).
 */
import { execFile } from 'node:child_process';
import type { VerifyCheck } from '../../core/verify-report.ts';
import { type PgEnv, pgProgram, queryRows, quoteIdent } from '../postgres.ts';

/** An SQL assertion from the configuration (`verify.assertions`). */
export interface VerifyAssertion {
  readonly name: string;
  readonly database: string;
  readonly query: string;
  /** The first column of the first row, as psql prints it. */
  readonly expected: string;
}

export interface TableRows {
  readonly database: string;
  readonly table: string;
  readonly rows: number;
}

/** Databases a check looks at: every one that allows connections, templates excluded. */
export async function restoredDatabases(pg: PgEnv): Promise<string[]> {
  const rows = await queryRows(
    pg,
    'select datname from pg_catalog.pg_database where datallowconn and not datistemplate order by datname',
  );
  return rows.map((r) => r[0] as string);
}

/**
 * `pg_amcheck --heapallindexed` on every database (amcheck is installed in the scratch cluster
 * only). Exit 0 is clean; 2 means corruption, whose first lines name the relation and block.
 */
export async function runAmcheck(pg: PgEnv, signal?: AbortSignal): Promise<VerifyCheck> {
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>(
    (resolve) => {
      execFile(
        pgProgram(pg, 'pg_amcheck'),
        ['--all', '--heapallindexed', '--install-missing', '--no-password', '--maintenance-db=template1'],
        { env: pg.env, maxBuffer: 64 * 1024 * 1024, ...(signal ? { signal } : {}) },
        (error, out, err) => {
          const exit = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
          resolve({ code: exit, stdout: out, stderr: err });
        },
      );
    },
  );
  if (code === 0)
    return { name: 'amcheck', passed: true, detail: 'pg_amcheck --heapallindexed: no corruption' };
  const lines = `${stdout}\n${stderr}`
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return {
    name: 'amcheck',
    passed: false,
    detail: `pg_amcheck --heapallindexed ${code === 2 ? 'found corruption' : `failed (exit ${code})`}: ${lines.slice(0, 4).join(' | ')}`,
  };
}

const TABLES_SQL = `select pg_catalog.format('%I.%I', n.nspname, c.relname)
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.relkind = 'r' and n.nspname <> 'information_schema' and n.nspname !~ '^pg_'
  order by 1`;

/** Row counts of every ordinary table of `database` (partitions counted one by one). */
export async function countRows(pg: PgEnv, database: string): Promise<TableRows[]> {
  const tables = (await queryRows(pg, TABLES_SQL, database)).map((r) => r[0] as string);
  const counts: TableRows[] = [];
  // One statement per hundred tables: a round trip per table is slow on schemas with thousands.
  for (let i = 0; i < tables.length; i += 100) {
    const chunk = tables.slice(i, i + 100);
    const sql = chunk
      .map((t, j) => `select ${j}, (select pg_catalog.count(*) from only ${t})`)
      .join(' union all ');
    for (const [index, rows] of await queryRows(pg, sql, database)) {
      counts.push({ database, table: chunk[Number(index)] as string, rows: Number(rows) });
    }
  }
  return counts;
}

/**
 * The newest commit the restored cluster holds: the commit timestamp of the last transaction when
 * track_commit_timestamp recorded it, else the time of the last transaction recovery replayed.
 * Must run before anything writes to the cluster.
 */
export async function newestCommit(
  pg: PgEnv,
): Promise<{ time: string; source: 'commit-timestamp' | 'recovery-end' } | undefined> {
  const iso = (value: string | undefined) => (value ? new Date(value).toISOString() : undefined);
  const committed = await queryRows(
    pg,
    `select pg_catalog.to_char(c."timestamp" at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') from pg_catalog.pg_last_committed_xact() c`,
  ).catch(() => []);
  const fromCommitTs = iso(committed[0]?.[0]);
  if (fromCommitTs) return { time: fromCommitTs, source: 'commit-timestamp' };
  const replayed = await queryRows(
    pg,
    'select pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp() at time zone \'UTC\', \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\')',
  ).catch(() => []);
  const fromReplay = iso(replayed[0]?.[0]);
  return fromReplay ? { time: fromReplay, source: 'recovery-end' } : undefined;
}

/** Runs one assertion; the detail names it, what was expected and what came back. */
export async function runAssertion(pg: PgEnv, assertion: VerifyAssertion): Promise<VerifyCheck> {
  const name = `assertion:${assertion.name}`;
  try {
    const rows = await queryRows(pg, assertion.query, assertion.database);
    const got = rows[0]?.[0];
    const passed = got === assertion.expected;
    return {
      name,
      passed,
      detail: passed
        ? `${assertion.database}: ${assertion.query} = ${JSON.stringify(got)}`
        : `assertion "${assertion.name}" failed in database ${quoteIdent(assertion.database)}: ` +
          `${assertion.query} returned ${got === undefined ? 'no rows' : JSON.stringify(got)}, expected ${JSON.stringify(assertion.expected)}`,
    };
  } catch (error) {
    return {
      name,
      passed: false,
      detail: `assertion "${assertion.name}" could not run in database ${quoteIdent(assertion.database)}: ${(error as Error).message}`,
    };
  }
}
