/**
 * Restore verification against doing it by hand, on the same dump of the bench database:
 *
 *   pgkeep restore --db bench --into X + pg_amcheck --heapallindexed -d X   the manual floor
 *   pgkeep verify --db bench                                                 scratch cluster, restore, checks, removal
 *
 * Target (issue 9): verify at most 1.5x the manual restore plus pg_amcheck.
 * BENCH_DB_MB sets the database size (default 1024); BENCH_RUNS the runs per tool (default 3).
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as age from 'age-encryption';
import { PG_BIN, startCluster } from '../test/support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE } from '../test/support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);
const sizeMb = Number(process.env.BENCH_DB_MB ?? 1024);
const runs = Number(process.env.BENCH_RUNS ?? 3);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

async function seconds(command: string, env: NodeJS.ProcessEnv): Promise<number> {
  const start = performance.now();
  await execFileAsync('sh', ['-c', command], { env, maxBuffer: 64 * 1024 * 1024 });
  return (performance.now() - start) / 1000;
}

const work = await mkdtemp(join(tmpdir(), 'pgkeep-bench-verify-'));
// The scratch cluster runs as postgres when the bench runs as root: it must get through `work`.
await chmod(work, 0o711);
const pg = await startCluster({ settings: { shared_buffers: '256MB', max_wal_size: '4GB' } });
try {
  await pg.sql('create database bench');
  const rows = Math.round((sizeMb * 1024 * 1024) / 165);
  process.stderr.write(`generating ~${sizeMb} MB (${rows} rows) of varied rows...\n`);
  await pg.sql(
    `create table orders as
       select g as id,
              (random() * 100000)::int as customer_id,
              md5(random()::text) as reference,
              left(repeat(md5(g::text), 3), (random() * 80)::int) as note,
              round((random() * 1000)::numeric, 2) as amount
       from generate_series(1, ${rows}) g;
     alter table orders add primary key (id);
     create index orders_customer on orders (customer_id);`,
    'bench',
  );
  const dbSize = await pg.sql("select pg_size_pretty(pg_database_size('bench'))");
  const identity = await age.generateX25519Identity();
  const identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
  const repo = join(work, 'repo');
  await mkdir(repo);
  const env = {
    ...process.env,
    ...pg.env,
    PGKEEP_CONFIG: join(work, 'note'),
    PGKEEP_CLUSTER: 'bench',
    PGKEEP_REPOSITORY: `file://${repo}`,
    PGKEEP_RECIPIENTS: await age.identityToRecipient(identity),
    PGKEEP_IDENTITY: identityFile,
    PGKEEP_PG_BIN: PG_BIN,
    PGKEEP_SPOOL_DIR: join(work, 'spool'),
  };
  await writeFile(join(work, 'note'), '# settings come from PGKEEP_* variables\n');
  await execFileAsync(NODE, [PGKEEP_BUNDLE, 'backup', '--db', 'bench'], { env });

  const manual: number[] = [];
  const verify: number[] = [];
  for (let i = 0; i < runs; i++) {
    manual.push(
      await seconds(
        `"${NODE}" "${PGKEEP_BUNDLE}" restore --db bench --into bench_manual && ` +
          `"${PG_BIN}/pg_amcheck" --heapallindexed --install-missing -d bench_manual`,
        env,
      ),
    );
    await pg.sql('drop database bench_manual');
    verify.push(
      await seconds(
        `"${NODE}" "${PGKEEP_BUNDLE}" verify --db bench --work-dir "${join(work, 'scratch')}"`,
        env,
      ),
    );
  }
  const floor = median(manual);
  console.log(`\nrestore verification, database ${dbSize}, median of ${runs} runs`);
  console.log('tool                                          seconds  x manual');
  console.log(
    `${'pgkeep restore + pg_amcheck (by hand)'.padEnd(44)}${floor.toFixed(2).padStart(9)}  ${'1.00'.padStart(8)}`,
  );
  console.log(
    `${'pgkeep verify --db'.padEnd(44)}${median(verify).toFixed(2).padStart(9)}  ${(median(verify) / floor).toFixed(2).padStart(8)}`,
  );
} finally {
  await pg.destroy();
  await rm(work, { recursive: true, force: true });
}
