/**
 * `pgkeep verify --db` on dumps the agent made, read from a provider's copy on a real S3-compatible
 * server (s3rver): a pass with row counts and a true assertion; a flipped byte in the dump (exit 5,
 * names the object); a false assertion (exit 7, names it). Nothing is left behind.
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseVerifyReport } from '../../../core/verify-report.ts';
import { openStorage } from '../../../storage/open-storage.ts';
import { type AgeKeyPair, referenceKeyPairs } from '../../support/age-keys.ts';
import { PG_BIN, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { runPgkeep, startPgkeep } from '../../support/pgkeep-cli.ts';
import {
  S3RVER_CREDENTIALS,
  type S3Server,
  startS3Server,
  useS3rverCredentials,
} from '../../support/s3-server.ts';
import { until } from '../../support/until.ts';
import { copyRepository, flipByte, leftovers } from './verify-support.ts';

let pg: PgCluster;
let s3: S3Server;
let work: string;
let scratchRoot: string;
let env: Record<string, string>;
let keys: AgeKeyPair;

async function writeConfig(name: string, assertions: object[]): Promise<string> {
  const path = join(work, name);
  await writeFile(
    path,
    JSON.stringify({
      cluster: 'shopdb',
      repository: s3.url('ingest'),
      recipients: [keys.recipient],
      identityFile: join(work, 'identity.txt'),
      spoolDir: join(work, 'spool'),
      pgBin: PG_BIN,
      targets: { offsite: s3.url('offsite'), damaged: s3.url('damaged') },
      verify: { assertions },
    }),
  );
  return path;
}

beforeAll(async () => {
  useS3rverCredentials();
  [pg, s3] = await Promise.all([
    startCluster(),
    startS3Server({ buckets: ['ingest', 'offsite', 'damaged'] }),
  ]);
  work = await mkdtemp(join(tmpdir(), 'pgkeep-verify-logical-'));
  // The scratch cluster runs as postgres when the tests run as root: it must get through `work`.
  await chmod(work, 0o711);
  scratchRoot = join(work, 'scratch');
  keys = (await referenceKeyPairs()).x25519;
  await writeFile(join(work, 'identity.txt'), `${keys.identity}\n`, { mode: 0o600 });
  await pg.sql('create database shop');
  await pg.sql(
    `create table orders (id int primary key, item text not null);
     create index orders_item on orders (item);
     insert into orders select g, 'item ' || g from generate_series(1, 2500) g;
     create table customers (id int primary key);
     insert into customers select generate_series(1, 40);`,
    'shop',
  );
  const config = await writeConfig('pgkeep.yaml', [
    { name: 'orders-present', database: 'shop', query: 'select count(*) from orders', expected: 2500 },
  ]);
  env = {
    ...pg.env,
    PGKEEP_CONFIG: config,
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };
  const backup = await runPgkeep(['backup', '--db', 'shop'], env);
  expect(backup.code, backup.stderr).toBe(0);
  // The providers' copies, as replication makes them: one faithful, one with a flipped byte in the dump.
  const ingest = openStorage(s3.url('ingest'));
  await copyRepository(ingest, openStorage(s3.url('offsite')), 'v1/');
  await copyRepository(ingest, openStorage(s3.url('damaged')), 'v1/', (key, body) =>
    key.endsWith('dump.zst.age') ? flipByte(body) : body,
  );
}, 120_000);

afterAll(async () => {
  await pg?.destroy();
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

it('restores the dump from a provider copy, counts rows, passes the assertion, leaves nothing', async () => {
  const run = await runPgkeep(
    ['verify', '--db', 'shop', '--from', 'offsite', '--json', '--work-dir', scratchRoot],
    env,
  );
  expect(run.code, run.stderr + run.stdout).toBe(0);
  const report = parseVerifyReport(run.stdout);
  expect(report).toBeDefined();
  expect(report?.passed).toBe(true);
  expect(report?.mode).toBe('logical');
  expect(report?.source).toBe('offsite');
  expect(report?.checks.map((c) => [c.name, c.passed])).toEqual([
    ['objects', true],
    ['restore', true],
    ['amcheck', true],
    ['row-counts', true],
    ['assertion:orders-present', true],
  ]);
  expect(report?.tables).toEqual(
    expect.arrayContaining([
      { database: 'shop', table: 'public.orders', rows: 2500 },
      { database: 'shop', table: 'public.customers', rows: 40 },
    ]),
  );
  expect(report?.measures?.restoreSeconds).toBeGreaterThan(0);
  expect(report?.measures?.newestCommitSource).toBe('dump-start');
  expect(await leftovers(scratchRoot)).toEqual([]);
  // The local copy of the report, and --history reading it.
  const saved = await readFile(join(work, 'spool', 'verify', 'shopdb', `${report?.runId}.json`), 'utf8');
  expect(parseVerifyReport(saved)?.runId).toBe(report?.runId);
  const history = await runPgkeep(['verify', '--history', '--from', 'offsite'], env);
  expect(history.code, history.stderr).toBe(0);
  expect(history.stdout).toMatch(new RegExp(`${report?.backupId}\\s+\\S+\\s+offsite\\s+logical\\s+passed`));
}, 120_000);

it('fails with exit 5 naming the dump whose byte was flipped', async () => {
  const run = await runPgkeep(
    ['verify', '--db', 'shop', '--from', 'damaged', '--work-dir', scratchRoot],
    env,
  );
  expect(run.code, run.stderr + run.stdout).toBe(5);
  expect(run.stderr).toMatch(
    /FAILED objects: object v1\/shopdb\/logical\/shop\/\S+\/dump\.zst\.age failed verification/,
  );
  expect(run.stdout).toMatch(/FAIL {2}objects/);
  expect(await leftovers(scratchRoot)).toEqual([]);
}, 120_000);

it('fails with exit 7 naming a false assertion, and writes the report where told', async () => {
  const config = await writeConfig('false-assertion.yaml', [
    { name: 'orders-present', database: 'shop', query: 'select count(*) from orders', expected: 2500 },
    { name: 'no-customers', database: 'shop', query: 'select count(*) from customers', expected: 0 },
  ]);
  const run = await runPgkeep(
    ['verify', '--db', 'shop', '--work-dir', scratchRoot, '--report-to', 'offsite'],
    { ...env, PGKEEP_CONFIG: config },
  );
  expect(run.code, run.stderr + run.stdout).toBe(7);
  expect(run.stderr).toMatch(
    /FAILED assertion:no-customers: assertion "no-customers" failed in database "shop": select count\(\*\) from customers returned "40", expected "0"/,
  );
  const key = /written to (verify\/shopdb\/\S+\.json) in offsite/.exec(run.stdout)?.[1];
  expect(key, run.stdout).toBeDefined();
  const { text } = await import('node:stream/consumers');
  const stored = parseVerifyReport(await text(await openStorage(s3.url('offsite')).get(key as string)));
  expect(stored?.passed).toBe(false);
  expect(stored?.exitCode).toBe(7);
  expect(await leftovers(scratchRoot)).toEqual([]);
}, 120_000);

it('removes the scratch cluster when interrupted with SIGINT', async () => {
  const { child, result } = startPgkeep(['verify', '--db', 'shop', '--work-dir', scratchRoot], env);
  // Wait until the scratch cluster runs, then interrupt.
  await until(
    'the scratch cluster to run',
    async () => (await leftovers(scratchRoot)).some((l) => l.startsWith('process')),
    { timeoutMs: 60_000, pollMs: 100 },
  );
  child.kill('SIGINT');
  const run = await result;
  expect(run.code, run.stderr + run.stdout).toBe(1);
  expect(run.stderr).toMatch(/pgkeep verify: interrupted/);
  expect(await leftovers(scratchRoot)).toEqual([]);
}, 120_000);
