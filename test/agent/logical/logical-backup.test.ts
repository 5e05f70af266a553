/**
 * Logical backup and restore end to end: the bundled CLI against a real PostgreSQL cluster and a
 * real S3-compatible server (s3rver) on 127.0.0.1, and a file:// repository.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { zstdDecompressSync } from 'node:zlib';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prerequisiteProblem } from '../../../scripts/prerequisites.ts';
import { PG_BIN, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { runPgkeep, startPgkeep } from '../../support/pgkeep-cli.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../../support/s3-server.ts';

const execFileAsync = promisify(execFile);
const MARKER = 'pgkeep-marker-7f3a9c1e-ünïcødé';

let pg: PgCluster;
let s3: S3Server;
let work: string;
let fileRepo: string;
let hybrid: { identity: string; recipient: string; file: string };
let x25519: { identity: string; recipient: string; file: string };

/** Everything the CLI needs, by environment only. */
function envFor(repository: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...pg.env,
    PGKEEP_CONFIG: join(work, 'empty.yaml'),
    PGKEEP_CLUSTER: 'shopdb',
    PGKEEP_REPOSITORY: repository,
    PGKEEP_RECIPIENTS: hybrid.recipient,
    PGKEEP_IDENTITY: hybrid.file,
    PGKEEP_PG_BIN: PG_BIN,
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    ...extra,
  };
}

async function dumpSql(database: string): Promise<string> {
  const { stdout } = await execFileAsync(join(PG_BIN, 'pg_dump'), ['--no-owner'], {
    env: { ...process.env, ...pg.env, PGDATABASE: database },
    maxBuffer: 256 * 1024 * 1024,
  });
  // pg_dump >= 15.14 brackets its output with \restrict KEY / \unrestrict KEY, a random key per run.
  return stdout.replace(/^\\(un)?restrict .*$/gm, '');
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

async function databaseExists(name: string): Promise<boolean> {
  return (await pg.sql(`select count(*) from pg_database where datname = '${name}'`)) === '1';
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-logical-'));
  fileRepo = join(work, 'repo');
  for (const repo of ['repo', 'damage', 'norecipient', 'checked', 'classic', 'mixed'])
    await mkdir(join(work, repo));
  const makeKey = async (kind: 'hybrid' | 'x25519') => {
    const identity =
      kind === 'hybrid' ? await age.generateHybridIdentity() : await age.generateX25519Identity();
    const file = join(work, `${kind}.key`);
    await writeFile(file, `${identity}\n`, { mode: 0o600 });
    return { identity, recipient: await age.identityToRecipient(identity), file };
  };
  [hybrid, x25519] = await Promise.all([makeKey('hybrid'), makeKey('x25519')]);
  // Everything comes from the environment; the config file is there but says nothing.
  await writeFile(join(work, 'empty.yaml'), '# all settings come from PGKEEP_* variables\n');
  [pg, s3] = await Promise.all([startCluster(), startS3Server({ buckets: ['ingest'] })]);
  await pg.sql('create database shop');
  await pg.sql(
    `create schema sales;
     create schema "Inventory ü";
     create table sales.customer (id bigserial primary key, name text not null, note text, photo bytea);
     create table "Inventory ü".item (sku text primary key, title text, price numeric(10,2), tags text[]);
     create sequence sales.invoice_no start 1000 increment 7;
     insert into sales.customer (name, note, photo)
       select 'Kunde ' || g || ' — Ωμέγα 東京 🐘', case when g % 10 = 0 then '${MARKER}' end,
              decode(md5(g::text) || md5((g * 7)::text), 'hex')
       from generate_series(1, 5000) g;
     insert into "Inventory ü".item select 'sku-' || g, 'Ware №' || g, g * 1.25, array['a', 'ß', g::text]
       from generate_series(1, 2000) g;
     select nextval('sales.invoice_no') from generate_series(1, 5);
     create view sales.big_customers as select id, name from sales.customer where id % 100 = 0;`,
    'shop',
  );
  await execFileAsync('chmod', ['-R', 'go-rwx', work]);
});

afterAll(async () => {
  await Promise.all([pg?.destroy(), s3?.stop()]);
  await rm(work, { recursive: true, force: true });
});

describe.each([
  ['s3', () => s3.url('ingest', 'roundtrip')],
  ['file', () => `file://${fileRepo}`],
])('round trip through a %s repository', (kind, repository) => {
  it('restores into a new database whose dump equals the original', async () => {
    const backup = await runPgkeep(['backup', '--db', 'shop', '--json'], envFor(repository()));
    expect(backup.stderr).toBe('');
    expect(backup.code).toBe(0);
    const manifest = JSON.parse(backup.stdout);
    expect(manifest.objects.map((o: { role: string }) => o.role)).toEqual(['dump', 'globals']);

    const listed = await runPgkeep(['list', '--json'], envFor(repository()));
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).map((b: { backupId: string }) => b.backupId)).toContain(
      manifest.backupId,
    );

    const target = `shop_restored_${kind}`;
    const restored = await runPgkeep(['restore', '--db', 'shop', '--into', target], envFor(repository()));
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    const [restoredSql, originalSql] = await Promise.all([dumpSql(target), dumpSql('shop')]);
    if (restoredSql !== originalSql) await writeFile(join(work, `diff-${kind}.sql`), restoredSql);
    expect(restoredSql === originalSql, `dumps differ; see ${work}/diff-${kind}.sql`).toBe(true);
    expect(await pg.sql('select last_value from sales.invoice_no', target)).toBe('1028');
  });
});

describe('file repository contents', () => {
  let dumpFile: string;
  let agentTmp: string;
  beforeAll(async () => {
    agentTmp = await mkdtemp(join(work, 'agent-tmp-'));
    const result = await runPgkeep(
      ['backup', '--db', 'shop'],
      envFor(`file://${fileRepo}`, { TMPDIR: agentTmp, HOME: agentTmp }),
    );
    expect(result.code).toBe(0);
    const files = await filesUnder(fileRepo);
    dumpFile = files
      .filter((f) => f.endsWith('/dump.zst.age'))
      .sort()
      .at(-1) as string;
  });

  it('never holds the planted marker in any stored byte, and no plaintext reached the temp dir', async () => {
    const marker = Buffer.from(MARKER);
    for (const file of await filesUnder(fileRepo)) {
      expect((await readFile(file)).includes(marker), file).toBe(false);
    }
    for (const file of await filesUnder(s3.directory)) {
      expect((await readFile(file)).includes(marker), file).toBe(false);
    }
    // The agent spilled nothing to disk: its temp directory is still empty after a backup.
    expect(await readdir(agentTmp)).toEqual([]);
  });

  it('decrypts with the age CLI and an X25519 identity, and pg_restore reads the result', async () => {
    for (const program of ['age', 'zstd', 'pg_restore']) {
      expect(prerequisiteProblem(program), 'the standard tools alone read a stored dump').toBeUndefined();
    }
    // The installed age CLI predates post-quantum recipients, and a backup's recipients are all of
    // one kind: this backup is to the classic recipient alone.
    const classic = join(work, 'classic');
    const result = await runPgkeep(
      ['backup', '--db', 'shop'],
      envFor(`file://${classic}`, { PGKEEP_RECIPIENTS: x25519.recipient }),
    );
    expect(result.code).toBe(0);
    const classicDump = (await filesUnder(classic)).find((f) => f.endsWith('dump.zst.age'));
    const plain = execFileSync('sh', [
      '-c',
      'age -d -i "$1" "$2" | zstd -d | "$3" --list',
      'sh',
      x25519.file,
      classicDump ?? 'no dump written',
      join(PG_BIN, 'pg_restore'),
    ]);
    expect(plain.toString()).toMatch(/TABLE sales customer/);
    expect(plain.toString()).toMatch(/VIEW sales big_customers/);
  });

  it('decrypts with the reference library and the post-quantum hybrid identity', async () => {
    const d = new age.Decrypter();
    d.addIdentity(hybrid.identity);
    const plaintext = zstdDecompressSync(await d.decrypt(await readFile(dumpFile)));
    expect(plaintext.subarray(0, 5).toString()).toBe('PGDMP');
  });
});

describe('damaged or unreadable objects', () => {
  let repo: string;
  let dumpFile: string;
  beforeAll(async () => {
    repo = join(work, 'damage');
    expect((await runPgkeep(['backup', '--db', 'shop'], envFor(`file://${repo}`))).code).toBe(0);
    dumpFile = (await filesUnder(repo)).find((f) => f.endsWith('/dump.zst.age')) as string;
  });

  it('fails on one flipped byte, naming the object, and leaves no database behind', async () => {
    const original = await readFile(dumpFile);
    const damaged = Buffer.from(original);
    const at = Math.floor(damaged.length / 2);
    damaged[at] = (damaged[at] as number) ^ 0x20;
    await writeFile(dumpFile, damaged);
    try {
      const result = await runPgkeep(
        ['restore', '--db', 'shop', '--into', 'shop_flipped'],
        envFor(`file://${repo}`),
      );
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(
        /object v1\/shopdb\/logical\/shop\/.*\/dump\.zst\.age failed verification/,
      );
      expect(await databaseExists('shop_flipped')).toBe(false);
    } finally {
      await writeFile(dumpFile, original);
    }
  });

  it('fails on a truncated object and never reports a partial restore as done', async () => {
    const original = await readFile(dumpFile);
    await writeFile(dumpFile, original.subarray(0, original.length - 1000));
    try {
      const result = await runPgkeep(
        ['restore', '--db', 'shop', '--into', 'shop_truncated'],
        envFor(`file://${repo}`),
      );
      expect(result.code).not.toBe(0);
      expect(result.stdout).not.toMatch(/restored/);
      expect(result.stderr).toMatch(/dump\.zst\.age/);
      expect(await databaseExists('shop_truncated')).toBe(false);
    } finally {
      await writeFile(dumpFile, original);
    }
  });

  it('says "no identity matches" for a wrong identity', async () => {
    const other = join(work, 'other.key');
    await writeFile(other, `${await age.generateHybridIdentity()}\n`, { mode: 0o600 });
    const result = await runPgkeep(
      ['restore', '--db', 'shop', '--into', 'shop_wrong_key'],
      envFor(`file://${repo}`, { PGKEEP_IDENTITY: other }),
    );
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/no identity matches/);
    expect(await databaseExists('shop_wrong_key')).toBe(false);
  });

  it('restores the intact object afterwards (the damage tests restored it)', async () => {
    const result = await runPgkeep(
      ['restore', '--db', 'shop', '--into', 'shop_after'],
      envFor(`file://${repo}`),
    );
    expect(result.code).toBe(0);
  });
});

describe('a pg_dump killed mid-stream', () => {
  it('exits non-zero, writes no manifest and leaves no open multipart upload', async () => {
    await pg.sql('create database big');
    await pg.sql(
      `create table filler as select g, md5(random()::text) || md5(random()::text) || md5(g::text) as t
       from generate_series(1, 1500000) g`,
      'big',
    );
    const repository = `${s3.url('ingest', 'killed')}&part-size-mib=5`;
    const { child, result } = startPgkeep(['backup', '--db', 'big'], envFor(repository));
    // Wait until the upload is under way, then kill pg_dump (the agent's child) with SIGKILL.
    let killed = false;
    for (let i = 0; i < 600 && !killed; i++) {
      await new Promise((r) => setTimeout(r, 50));
      if ((await s3.openUploads('ingest')).length === 0) continue;
      const children = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(child.pid)]).toString();
      const dump = children.split('\n').find((line) => line.includes('pg_dump'));
      if (dump) {
        process.kill(Number(dump.trim().split(/\s+/)[0]), 'SIGKILL');
        killed = true;
      }
    }
    expect(killed).toBe(true);
    const outcome = await result;
    expect(outcome.code).toBe(1);
    expect(outcome.stderr).toMatch(/pg_dump was killed by SIGKILL/);
    expect(await s3.openUploads('ingest')).toEqual([]);
    const listed = await runPgkeep(['list', '--json'], envFor(repository));
    expect(JSON.parse(listed.stdout)).toEqual([]);
  });
});

describe('refusals and configuration errors', () => {
  it('refuses to run without a recipient and stores nothing', async () => {
    const repo = join(work, 'norecipient');
    const result = await runPgkeep(
      ['backup', '--db', 'shop'],
      envFor(`file://${repo}`, { PGKEEP_RECIPIENTS: '' }),
    );
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/no recipient configured/);
    expect(await filesUnder(repo)).toEqual([]);
  });

  it('refuses a mix of post-quantum and classic recipients, naming both, and stores nothing', async () => {
    const repo = join(work, 'mixed');
    const result = await runPgkeep(
      ['backup', '--db', 'shop'],
      envFor(`file://${repo}`, { PGKEEP_RECIPIENTS: `${hybrid.recipient},${x25519.recipient}` }),
    );
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/can't mix post-quantum and classic recipients/);
    expect(result.stderr).toContain(hybrid.recipient.slice(0, 24));
    expect(result.stderr).toContain(x25519.recipient.slice(0, 24));
    expect(await filesUnder(repo)).toEqual([]);
  });

  it('names an unknown key in the config file', async () => {
    const config = join(work, 'typo.yaml');
    await writeFile(config, 'cluster: shopdb\nrepository: file:///tmp/x\nrecipent: age1abc\n');
    const result = await runPgkeep(
      ['--config', config, 'list'],
      envFor('', { PGKEEP_CONFIG: '', PGKEEP_REPOSITORY: '' }),
    );
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/unknown option "recipent"/);
  });

  it('names a bad repository URL', async () => {
    const result = await runPgkeep(['list'], envFor('ftp://example/x'));
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/repository/);
    expect(result.stderr).toMatch(/ftp/);
  });

  it('reports an unreachable endpoint within a bounded time', async () => {
    const started = Date.now();
    const result = await runPgkeep(
      ['list'],
      envFor('s3://ingest/x?endpoint=http%3A%2F%2F127.0.0.1%3A9&path-style=true&region=us-east-1'),
    );
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(/127\.0\.0\.1:9/);
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it('names a missing bucket', async () => {
    const result = await runPgkeep(['list'], envFor(s3.url('no-such-bucket', 'x')));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/no-such-bucket/);
  });

  it('check passes against a good setup and changes nothing', async () => {
    const repo = join(work, 'checked');
    const result = await runPgkeep(['check'], envFor(`file://${repo}`));
    expect(result.stdout).toMatch(/^ok +repository/m);
    expect(result.code).toBe(0);
    expect(await filesUnder(repo)).toEqual([]);
  });
});
