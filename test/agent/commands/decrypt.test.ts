/**
 * `pgkeep decrypt` on objects the agent really stored: a pg_dump from `pgkeep backup` and a WAL
 * segment archived by PostgreSQL through archive_command, with a post-quantum hybrid identity, and a
 * dump stored for a classic X25519 recipient (a backup's recipients are all of one kind); a wrong
 * identity, a flipped byte and a truncation each exit 5.
 */
import { execFile } from 'node:child_process';
import { chown, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateHybridIdentity, generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PG_BIN, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE, runForBytes } from '../../support/pgkeep-cli.ts';
import { archiveSettings, type Harness, makeHarness, switchAndWaitArchived } from '../wal/harness.ts';

const execFileAsync = promisify(execFile);

let h: Harness;
let pg: PgCluster;
let keys: Record<'hybrid' | 'x25519' | 'stranger', string>;
let dumpObject: string;
let classicDumpObject: string;
let walObject: string;
let walSegment: Buffer;

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

function decrypt(args: readonly string[]) {
  return runForBytes(NODE, [PGKEEP_BUNDLE, 'decrypt', ...args], {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
  });
}

beforeAll(async () => {
  const hybrid = await generateHybridIdentity();
  const x25519 = await generateX25519Identity();
  h = await makeHarness('decrypt', { recipients: [await identityToRecipient(hybrid)] });
  keys = {
    hybrid: join(h.dir, 'hybrid.key'),
    x25519: join(h.dir, 'x25519.key'),
    stranger: join(h.dir, 'other.key'),
  };
  await writeFile(keys.hybrid, `${hybrid}\n`, { mode: 0o600 });
  await writeFile(keys.x25519, `${x25519}\n`, { mode: 0o600 });
  await writeFile(keys.stranger, `${await generateHybridIdentity()}\n`, { mode: 0o600 });

  pg = await startCluster({ settings: archiveSettings(h) });
  await pg.sql('create database shop');
  await pg.sql(
    "create table item (id int primary key, name text); insert into item values (1, 'anvil')",
    'shop',
  );
  const backup = await h.pgkeep(['backup', '--db', 'shop'], pg.env);
  expect(backup.code, backup.stderr).toBe(0);
  const name = await switchAndWaitArchived(pg);
  walSegment = await readFile(join(pg.dataDir, 'pg_wal', name));
  const stored = await filesUnder(h.repoDir);
  dumpObject = stored.find((f) => f.endsWith('/dump.zst.age')) as string;
  walObject = stored.find((f) => f.includes(`/wal/`) && f.includes(`/${name}-`)) as string;
  expect(dumpObject && walObject, stored.join('\n')).toBeTruthy();
  const classicRepo = join(h.dir, 'classic-repo');
  await mkdir(classicRepo);
  if (h.user) await chown(classicRepo, h.user.uid, h.user.gid);
  const classic = await h.pgkeep(['backup', '--db', 'shop'], {
    ...pg.env,
    PGKEEP_REPOSITORY: `file://${classicRepo}`,
    PGKEEP_RECIPIENTS: await identityToRecipient(x25519),
  });
  expect(classic.code, classic.stderr).toBe(0);
  classicDumpObject = (await filesUnder(classicRepo)).find((f) => f.endsWith('/dump.zst.age')) as string;
}, 120_000);

afterAll(async () => {
  await pg?.destroy();
  if (h) await rm(h.dir, { recursive: true, force: true });
});

describe('pgkeep decrypt', () => {
  it('gives back the archived WAL segment byte for byte (hybrid identity)', async () => {
    const result = await decrypt(['-i', keys.hybrid, walObject]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.equals(walSegment)).toBe(true);
  });

  it('opens a dump stored for a classic X25519 recipient with its identity', async () => {
    const result = await decrypt(['-i', keys.x25519, classicDumpObject]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.subarray(0, 5).toString()).toBe('PGDMP');
  });

  it('turns a stored dump into what pg_restore reads, with no config or repository', async () => {
    const dump = await decrypt(['-i', keys.hybrid, dumpObject]);
    expect(dump.code, dump.stderr).toBe(0);
    expect(dump.stdout.subarray(0, 5).toString()).toBe('PGDMP');
    const file = join(h.dir, 'shop.dump');
    await writeFile(file, dump.stdout);
    const { stdout } = await execFileAsync(join(PG_BIN, 'pg_restore'), ['--list', file]).catch((error) => {
      throw new Error(`pg_restore (PostgreSQL's client, in ${PG_BIN}) reads the decrypted dump: ${error}`);
    });
    expect(stdout).toMatch(/TABLE public item/);
  });

  it('--raw stops at the age layer: the zstd stream as stored', async () => {
    const raw = await decrypt(['--raw', '-i', keys.hybrid, walObject]);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdout.readUInt32LE(0)).toBe(0xfd2fb528); // the zstd frame magic
  });

  it('exits 5 with the reason and no output for an identity the object was not encrypted to', async () => {
    const result = await decrypt(['-i', keys.stranger, walObject]);
    expect(result.code).toBe(5);
    expect(result.stdout.length).toBe(0);
    expect(result.stderr).toMatch(/no identity matches any of the object’s recipients/);
  });

  it('exits 5 on a flipped byte and on a truncated object, never 0', async () => {
    const original = await readFile(walObject);
    const flipped = Buffer.from(original);
    flipped[flipped.length - 100] = (flipped[flipped.length - 100] as number) ^ 1;
    const cases = { flipped, truncated: original.subarray(0, original.length - 70_000) };
    for (const [what, bytes] of Object.entries(cases)) {
      const path = join(h.dir, `${what}.zst.age`);
      await writeFile(path, bytes);
      const result = await decrypt(['-i', keys.hybrid, path]);
      expect(result.code, what).toBe(5);
      expect(result.stderr, what).toMatch(/failed verification: .*(authentication|truncated)/);
      expect(result.stdout.length, what).toBeLessThan(walSegment.length);
    }
  });
});
