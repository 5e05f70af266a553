/**
 * Logical backup throughput and memory, side by side with pg_dump alone, on two database shapes:
 * `orders` (the one the data path was tuned on) and `wide` (wide jsonb documents, incompressible
 * bytea, 200 small tables; see logical-shapes-helpers.ts).
 *
 *   pg_dump -Fc -Z0 > /dev/null           the floor: PostgreSQL producing the dump
 *   pg_dump -Fc -Z0 | zstd -1 > file      what a hand-rolled script would do (compression only)
 *   pgkeep backup --db NAME               the same dump, compressed, encrypted, stored to file://
 *
 * Then the share sha256 would take of the backup's CPU if streams were hashed in plaintext, and
 * `pgkeep backup` of 8 databases with backup.parallelism 1, 2 and 4.
 *
 * Targets (issue 11): pgkeep <= 1.2x pg_dump -Z0 on both shapes, agent peak RSS < 150 MB.
 * BENCH_DB_MB sets each shape's size (default 1024; the 8 databases are an eighth of it each);
 * BENCH_RUNS the runs per tool (default 3).
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as age from 'age-encryption';
import { PG_BIN, startCluster } from '../test/support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE } from '../test/support/pgkeep-cli.ts';
import { makeOrders, makeWide, median, type Timing, timed } from './logical-shapes-helpers.ts';

const sizeMb = Number(process.env.BENCH_DB_MB ?? 1024);
const runs = Number(process.env.BENCH_RUNS ?? 3);
const log = (text: string) => process.stderr.write(`${text}\n`);

/** Node's sha256 rate on this machine, bytes a second (best of a few passes over 64 MiB). */
function sha256Rate(): number {
  const buffer = Buffer.alloc(64 * 1024 * 1024, 7);
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 4; i++) {
    const started = performance.now();
    createHash('sha256').update(buffer).digest();
    best = Math.min(best, (performance.now() - started) / 1000);
  }
  return buffer.length / best;
}

const work = await mkdtemp(join(tmpdir(), 'pgkeep-bench-'));
const pg = await startCluster({ settings: { shared_buffers: '256MB', max_wal_size: '4GB' } });
try {
  const identity = await age.generateHybridIdentity();
  const recipient = await age.identityToRecipient(identity);
  await writeFile(join(work, 'note'), '# settings come from PGKEEP_* variables\n');
  const pgkeepEnv = (database: string, repo: string, parallelism = 1): NodeJS.ProcessEnv => ({
    ...process.env,
    ...pg.env,
    PGDATABASE: database,
    PGKEEP_CONFIG: join(work, 'note'),
    PGKEEP_CLUSTER: 'bench',
    PGKEEP_RECIPIENTS: recipient,
    PGKEEP_PG_BIN: PG_BIN,
    PGKEEP_REPOSITORY: `file://${repo}`,
    PGKEEP_BACKUP_PARALLELISM: String(parallelism),
  });
  const pgkeepBackup = async (databases: string[], parallelism = 1): Promise<Timing> => {
    const repo = join(work, 'repo');
    await mkdir(repo);
    try {
      const args = databases.map((d) => `--db ${d}`).join(' ');
      return await timed(
        `"${NODE}" "${PGKEEP_BUNDLE}" backup ${args}`,
        pgkeepEnv(databases[0] as string, repo, parallelism),
      );
    } finally {
      await rm(repo, { recursive: true, force: true });
    }
  };

  const shapes = [
    ['orders', makeOrders],
    ['wide', makeWide],
  ] as const;
  const hashRate = sha256Rate();
  for (const [shape, make] of shapes) {
    await pg.sql(`create database ${shape}`);
    log(`generating the ${shape} database, ~${sizeMb} MB...`);
    await make(pg, shape, sizeMb);
    await pg.sql('vacuum analyze', shape);
    const dbSize = await pg.sql(`select pg_size_pretty(pg_database_size('${shape}'))`);
    const env = { ...process.env, ...pg.env, PGDATABASE: shape };
    await timed(`"${PG_BIN}/pg_dump" -Fc -Z0 | wc -c > "${join(work, 'size')}"`, env);
    const dumpBytes = Number(await readFile(join(work, 'size'), 'utf8'));
    const rows: Record<string, Timing[]> = {
      'pg_dump -Fc -Z0 > /dev/null': [],
      'pg_dump -Fc -Z0 | zstd -1 > file': [],
      'pgkeep backup (file://)': [],
    };
    for (let i = 0; i < runs; i++) {
      log(`${shape}: run ${i + 1} of ${runs}`);
      rows['pg_dump -Fc -Z0 > /dev/null']?.push(await timed(`"${PG_BIN}/pg_dump" -Fc -Z0 > /dev/null`, env));
      const file = join(work, 'dump.zst');
      rows['pg_dump -Fc -Z0 | zstd -1 > file']?.push(
        await timed(`"${PG_BIN}/pg_dump" -Fc -Z0 | zstd -q -1 > "${file}"`, env),
      );
      await rm(file, { force: true });
      rows['pgkeep backup (file://)']?.push(await pgkeepBackup([shape]));
    }
    const floor = median(rows['pg_dump -Fc -Z0 > /dev/null']?.map((t) => t.seconds) ?? []);
    console.log(
      `\nlogical backup, shape ${shape}, database ${dbSize}, plain dump ${(dumpBytes / 2 ** 20).toFixed(0)} MiB, median of ${runs} runs`,
    );
    console.log('tool                                seconds  x pg_dump -Z0  CPU s  peak RSS');
    for (const [name, timings] of Object.entries(rows)) {
      const s = median(timings.map((t) => t.seconds));
      const cpu = median(timings.map((t) => t.cpuSeconds));
      const rss = name.startsWith('pgkeep') ? `${median(timings.map((t) => t.maxRssMb)).toFixed(0)} MB` : '';
      console.log(
        `${name.padEnd(36)}${s.toFixed(2).padStart(7)}  ${(s / floor).toFixed(2).padStart(13)}  ${cpu.toFixed(2).padStart(5)}  ${rss.padStart(8)}`,
      );
    }
    // Why streams are not hashed in plaintext: what one more sha256 over every byte would cost.
    const pgkeepCpu = median(rows['pgkeep backup (file://)']?.map((t) => t.cpuSeconds) ?? []);
    const hashSeconds = dumpBytes / hashRate;
    console.log(
      `a plaintext sha256 over the dump: ${hashSeconds.toFixed(2)} s of CPU at ${(hashRate / 2 ** 20).toFixed(0)} MiB/s, ` +
        `${((100 * hashSeconds) / (pgkeepCpu + hashSeconds)).toFixed(0)}% of the backup's CPU with it`,
    );
    await pg.sql(`drop database ${shape}`);
  }

  // Eight databases, dumped one at a time and several at once.
  const eachMb = Math.max(1, Math.round(sizeMb / 8));
  log(`generating 8 databases of ~${eachMb} MB...`);
  await pg.sql('create database template_orders');
  await makeOrders(pg, 'template_orders', eachMb);
  const eight = Array.from({ length: 8 }, (_, i) => `db${i + 1}`);
  for (const name of eight) await pg.sql(`create database ${name} template template_orders`);
  const byParallelism: Record<number, Timing[]> = { 1: [], 2: [], 4: [] };
  for (let i = 0; i < runs; i++) {
    for (const p of [1, 2, 4]) byParallelism[p]?.push(await pgkeepBackup(eight, p));
  }
  const serial = median(byParallelism[1]?.map((t) => t.seconds) ?? []);
  console.log(`\npgkeep backup of 8 databases of ~${eachMb} MB (orders shape), median of ${runs} runs`);
  console.log('backup.parallelism  seconds  x parallelism 1  peak RSS');
  for (const [p, timings] of Object.entries(byParallelism)) {
    const s = median(timings.map((t) => t.seconds));
    console.log(
      `${p.padEnd(18)}${s.toFixed(2).padStart(9)}  ${(s / serial).toFixed(2).padStart(15)}  ${`${median(timings.map((t) => t.maxRssMb)).toFixed(0)} MB`.padStart(8)}`,
    );
  }
} finally {
  await pg.destroy();
  await rm(work, { recursive: true, force: true });
}
