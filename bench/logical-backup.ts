/**
 * Logical backup throughput and memory, side by side with pg_dump alone.
 *
 *   pg_dump -Fc -Z0 > /dev/null      the floor: PostgreSQL producing the dump
 *   pgkeep backup --db bench          the same dump, compressed, encrypted, hashed, stored to file://
 *   pg_dump -Fc | gzip > file         what a hand-rolled script would do (compression only)
 *
 * Target (issue 2): pgkeep <= 1.3x pg_dump -Z0, and the agent's peak RSS < 150 MB at any size.
 * BENCH_DB_MB sets the database size (default 1024); BENCH_RUNS the runs per tool (default 3).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
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

async function timed(
  command: string,
  env: NodeJS.ProcessEnv,
): Promise<{ seconds: number; maxRssMb: number }> {
  // GNU time reports the peak RSS of the whole command; %e is wall-clock seconds.
  const { stderr } = await execFileAsync('/usr/bin/time', ['-f', 'TIME %e %M', 'sh', '-c', command], {
    env,
    maxBuffer: 64 * 1024 * 1024,
  });
  const m = /TIME ([\d.]+) (\d+)/.exec(stderr);
  if (!m) throw new Error(`no timing in: ${stderr}`);
  return { seconds: Number(m[1]), maxRssMb: Number(m[2]) / 1024 };
}

const work = await mkdtemp(join(tmpdir(), 'pgkeep-bench-'));
const pg = await startCluster({ settings: { shared_buffers: '256MB', max_wal_size: '4GB' } });
try {
  await pg.sql('create database bench');
  const rows = Math.round((sizeMb * 1024 * 1024) / 165);
  process.stderr.write(`generating ~${sizeMb} MB (${rows} rows) of varied rows...\n`);
  await pg.sql(
    `create table orders as
       select g as id,
              timestamptz '2026-01-01' - random() * interval '365 days' as placed_at,
              (random() * 100000)::int as customer_id,
              md5(random()::text) as reference,
              left(repeat(md5(g::text), 3), (random() * 80)::int) || ' ' || chr(65 + (g % 26)) as note,
              jsonb_build_object('sku', (random() * 1e6)::int, 'qty', 1 + (random() * 9)::int, 'gift', g % 7 = 0) as attrs,
              round((random() * 1000)::numeric, 2) as amount
       from generate_series(1, ${rows}) g`,
    'bench',
  );
  const dbSize = await pg.sql("select pg_size_pretty(pg_database_size('bench'))");
  const identity = await age.generateHybridIdentity();
  const recipient = await age.identityToRecipient(identity);
  const env = { ...process.env, ...pg.env, PGDATABASE: 'bench' };
  const pgkeepEnv = {
    ...env,
    PGKEEP_CONFIG: join(work, 'note'),
    PGKEEP_CLUSTER: 'bench',
    PGKEEP_RECIPIENTS: recipient,
    PGKEEP_PG_BIN: PG_BIN,
  };
  await writeFile(join(work, 'note'), '# settings come from PGKEEP_* variables\n');

  const results: Record<string, { seconds: number[]; rss: number[] }> = {
    'pg_dump -Fc -Z0 > /dev/null': { seconds: [], rss: [] },
    'pgkeep backup (file://)': { seconds: [], rss: [] },
    'pg_dump -Fc | gzip > file': { seconds: [], rss: [] },
  };
  for (let i = 0; i < runs; i++) {
    const a = await timed(`"${PG_BIN}/pg_dump" -Fc -Z0 > /dev/null`, env);
    results['pg_dump -Fc -Z0 > /dev/null']?.seconds.push(a.seconds);
    const repo = join(work, `repo-${i}`);
    await mkdir(repo);
    const b = await timed(`"${NODE}" "${PGKEEP_BUNDLE}" backup --db bench`, {
      ...pgkeepEnv,
      PGKEEP_REPOSITORY: `file://${repo}`,
    });
    results['pgkeep backup (file://)']?.seconds.push(b.seconds);
    results['pgkeep backup (file://)']?.rss.push(b.maxRssMb);
    await rm(repo, { recursive: true, force: true });
    const c = await timed(`"${PG_BIN}/pg_dump" -Fc | gzip > "${join(work, 'dump.gz')}"`, env);
    results['pg_dump -Fc | gzip > file']?.seconds.push(c.seconds);
    await rm(join(work, 'dump.gz'), { force: true });
  }
  const floor = median(results['pg_dump -Fc -Z0 > /dev/null']?.seconds ?? []);
  console.log(`\nlogical backup, database ${dbSize}, median of ${runs} runs`);
  console.log('tool                              seconds  x pg_dump -Z0  agent peak RSS');
  for (const [name, r] of Object.entries(results)) {
    const s = median(r.seconds);
    const rss = r.rss.length ? `${median(r.rss).toFixed(0)} MB` : '';
    console.log(
      `${name.padEnd(34)}${s.toFixed(2).padStart(7)}  ${(s / floor).toFixed(2).padStart(13)}  ${rss.padStart(14)}`,
    );
  }
} finally {
  await pg.destroy();
  await rm(work, { recursive: true, force: true });
}
