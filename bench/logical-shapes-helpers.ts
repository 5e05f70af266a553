/**
 * Helpers of the logical backup benchmark (logical-backup.ts): the two database shapes it dumps,
 * and timing a shell line with its peak RSS and CPU.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { PgCluster } from '../test/support/pg-cluster.ts';

const execFileAsync = promisify(execFile);

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

export interface Timing {
  readonly seconds: number;
  readonly maxRssMb: number;
  /** User plus system CPU seconds of the whole command. */
  readonly cpuSeconds: number;
}

export async function timed(command: string, env: NodeJS.ProcessEnv): Promise<Timing> {
  // GNU time reports the peak RSS of the largest process; %e is wall-clock seconds.
  const { stderr } = await execFileAsync('/usr/bin/time', ['-f', 'TIME %e %M %U %S', 'sh', '-c', command], {
    env,
    maxBuffer: 64 * 1024 * 1024,
  });
  const m = /TIME ([\d.]+) (\d+) ([\d.]+) ([\d.]+)/.exec(stderr);
  if (!m) throw new Error(`no timing in: ${stderr}`);
  return { seconds: Number(m[1]), maxRssMb: Number(m[2]) / 1024, cpuSeconds: Number(m[3]) + Number(m[4]) };
}

/**
 * The shape the data path was tuned on: one narrow table of varied rows (timestamps, md5 tokens,
 * short text, a small jsonb, numerics), ~165 bytes a row.
 */
export async function makeOrders(pg: PgCluster, database: string, sizeMb: number): Promise<void> {
  const rows = Math.round((sizeMb * 1024 * 1024) / 165);
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
    database,
  );
}

/**
 * A shape it was not tuned on: half wide jsonb documents (~2 KB, nested arrays and objects), a
 * third bytea that does not compress (random bytes, TOASTed), and 200 small tables of mixed types.
 */
export async function makeWide(pg: PgCluster, database: string, sizeMb: number): Promise<void> {
  const bytes = sizeMb * 1024 * 1024;
  const docs = Math.round((bytes * 0.5) / 2100);
  const blobs = Math.round((bytes * 0.33) / 4096);
  await pg.sql(
    `create table documents as
       select g as id,
              jsonb_build_object(
                'customer', jsonb_build_object('id', g % 50000, 'name', 'Kunde ' || g, 'email', md5(g::text) || '@example.com'),
                'lines', (select jsonb_agg(jsonb_build_object('sku', md5((g * 31 + i)::text), 'qty', i, 'price', round((random() * 100)::numeric, 2)))
                          from generate_series(1, 12) i),
                'tags', to_jsonb(array[md5(g::text), md5((g + 1)::text), 'x' || (g % 97)]),
                'note', repeat(chr(97 + g % 26), (random() * 400)::int)
              ) as doc
       from generate_series(1, ${docs}) g`,
    database,
  );
  await pg.sql(
    `create table attachments (id int primary key, name text, data bytea);
     alter table attachments alter column data set storage external;
     insert into attachments
       select g, 'file-' || g || '.bin',
              (select decode(string_agg(md5(random()::text || i), ''), 'hex') from generate_series(1, 256) i)
       from generate_series(1, ${blobs}) g`,
    database,
  );
  const smallRows = Math.max(10, Math.round((bytes * 0.17) / 200 / 100));
  await pg.sql(
    `do $$ begin
       for t in 1..200 loop
         execute format('create table small_%s (id int primary key, at timestamptz, code text, qty numeric(12,3), flag boolean)', t);
         execute format('insert into small_%s select g, now() - g * interval ''1 minute'', md5((g * %s)::text), g * 1.5, g %% 2 = 0 from generate_series(1, ${smallRows}) g', t, t);
       end loop;
     end $$`,
    database,
  );
}
