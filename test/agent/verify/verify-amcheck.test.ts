/**
 * A base backup of a heap with a corrupted tuple: the corruption is written into the relation file
 * while the source cluster is stopped (its transaction id set beyond any the cluster has used),
 * the backup then taken as usual, and `pgkeep verify --backup` must fail with exit 7 because
 * pg_amcheck names the table. Nothing is left behind.
 */
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';
import { archiveSettings, type Harness, makeHarness } from '../wal/harness.ts';
import { leftovers } from './verify-support.ts';

let h: Harness;
let primary: PgCluster;

/** Sets t_xmin of the first tuple on page 0 of `file` to `xid`. */
async function corruptFirstTupleXmin(file: string, xid: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const page = Buffer.alloc(8192);
    await handle.read(page, 0, 8192, 0);
    // The first line pointer follows the 24-byte page header: lp_off is its low 15 bits.
    const lpOff = page.readUInt32LE(24) & 0x7fff;
    expect(lpOff).toBeGreaterThan(24);
    const xmin = Buffer.alloc(4);
    xmin.writeUInt32LE(xid);
    await handle.write(xmin, 0, 4, lpOff);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

beforeAll(async () => {
  h = await makeHarness('vheap');
  primary = await startCluster({ settings: { ...archiveSettings(h), autovacuum: 'off' } });
  await primary.sql(
    `create table ledger (id int primary key, amount int not null);
     insert into ledger select g, g * 10 from generate_series(1, 200) g;
     checkpoint;`,
  );
  const file = join(primary.dataDir, await primary.sql("select pg_relation_filepath('ledger')"));
  await primary.stop('fast');
  await corruptFirstTupleXmin(file, 3_000_000_000);
  await primary.start();
}, 120_000);

afterAll(async () => {
  await primary?.destroy();
  if (h) await rm(h.dir, { recursive: true, force: true });
});

it('fails with exit 7 when pg_amcheck finds the corrupted heap in the restored backup', async () => {
  const backup = await h.pgkeep(['basebackup', '--json'], primary.env);
  expect(backup.code, backup.stderr).toBe(0);
  const backupId = JSON.parse(backup.stdout).backupId as string;
  const scratchRoot = join(h.dir, 'scratch');
  const run = await runPgkeep(['verify', '--backup', backupId, '--work-dir', scratchRoot], {
    PGKEEP_CONFIG: h.configPath,
  });
  expect(run.code, run.stderr + run.stdout).toBe(7);
  expect(run.stdout).toMatch(/ok\s+restore/);
  expect(run.stderr).toMatch(
    /FAILED amcheck: pg_amcheck --heapallindexed found corruption: .*public\.ledger/,
  );
  expect(await leftovers(scratchRoot)).toEqual([]);
}, 240_000);
