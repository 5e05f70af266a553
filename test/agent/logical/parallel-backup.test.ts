/**
 * `pgkeep backup` dumping several databases at once (`backup.parallelism`): the bundled CLI
 * against a real PostgreSQL cluster and a file:// repository.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PG_BIN, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';

let pg: PgCluster;
let work: string;
let identityFile: string;
let recipient: string;

function envFor(repo: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...pg.env,
    PGKEEP_CONFIG: join(work, 'empty.yaml'),
    PGKEEP_CLUSTER: 'multi',
    PGKEEP_REPOSITORY: `file://${repo}`,
    PGKEEP_RECIPIENTS: recipient,
    PGKEEP_IDENTITY: identityFile,
    PGKEEP_PG_BIN: PG_BIN,
    PGKEEP_BACKUP_PARALLELISM: '2',
    ...extra,
  };
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** A fingerprint of a database's rows: equal fingerprints, equal contents. */
const fingerprint = (database: string) =>
  pg.sql("select count(*) || md5(string_agg(t::text, ',' order by id)) from t", database);

// The first database is much the largest: with two at a time, the small ones finish before it.
const DATABASES: readonly [string, number][] = [
  ['big', 300_000],
  ['small_a', 100],
  ['small_b', 2_000],
  ['small_c', 50],
];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-parallel-'));
  const identity = await age.generateHybridIdentity();
  recipient = await age.identityToRecipient(identity);
  identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
  await writeFile(join(work, 'empty.yaml'), '# all settings come from PGKEEP_* variables\n');
  pg = await startCluster();
  for (const [name, rows] of DATABASES) {
    await pg.sql(`create database ${name}`);
    await pg.sql(
      `create table t as select g as id, md5(g::text) || repeat('${name}', 5) as v from generate_series(1, ${rows}) g`,
      name,
    );
  }
});

afterAll(async () => {
  await pg?.destroy();
  await rm(work, { recursive: true, force: true });
});

describe('backup.parallelism 2', () => {
  it('dumps every database, lists them in the order named, and each restores to the same rows', async () => {
    const repo = join(work, 'repo-ok');
    await mkdir(repo);
    const args = ['backup', '--json', ...DATABASES.flatMap(([name]) => ['--db', name])];
    const result = await runPgkeep(args, envFor(repo));
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const manifest = JSON.parse(result.stdout) as {
      backupId: string;
      objects: { role: string; database?: string }[];
    };
    expect(manifest.objects.map((o) => o.database ?? o.role)).toEqual([
      ...DATABASES.map(([name]) => name),
      'globals',
    ]);
    for (const [name] of DATABASES) {
      const into = `${name}_restored`;
      const restored = await runPgkeep(
        ['restore', '--db', name, '--into', into, '--backup', manifest.backupId],
        envFor(repo),
      );
      expect(restored.stderr).toBe('');
      expect(restored.code).toBe(0);
      expect(await fingerprint(into)).toBe(await fingerprint(name));
    }
  });

  it('stops the other dumps when one fails, and writes no manifest and no dump', async () => {
    const repo = join(work, 'repo-fail');
    await mkdir(repo);
    const result = await runPgkeep(['backup', '--db', 'big', '--db', 'no_such_db'], envFor(repo));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/pg_dump.*no_such_db/s);
    // The big dump was running beside the failing one: it was stopped and removed, not finished.
    expect(await filesUnder(repo)).toEqual([]);
  });

  it('fails when the globals dump fails, naming it, and writes no manifest and no dump', async () => {
    // A real fault: a role that may dump its database but not read pg_authid, which
    // pg_dumpall --globals-only needs.
    await pg.sql('create role dumper login');
    await pg.sql('grant select on t to dumper', 'big');
    const repo = join(work, 'repo-globals');
    await mkdir(repo);
    try {
      const result = await runPgkeep(['backup', '--db', 'big'], envFor(repo, { PGUSER: 'dumper' }));
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(/pg_dumpall.*permission denied for table pg_authid/s);
      // The globals are dumped beside the database: its dump was stopped and removed, not left
      // behind without a manifest (the host cannot delete it).
      expect(await filesUnder(repo)).toEqual([]);
    } finally {
      await pg.sql('revoke select on t from dumper', 'big');
      await pg.sql('drop role dumper');
    }
  });

  it('refuses a parallelism below 1, naming the variable', async () => {
    const repo = join(work, 'repo-bad');
    await mkdir(repo);
    const result = await runPgkeep(
      ['backup', '--db', 'small_a'],
      envFor(repo, { PGKEEP_BACKUP_PARALLELISM: '0' }),
    );
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/backup\.parallelism.*PGKEEP_BACKUP_PARALLELISM/);
  });
});
