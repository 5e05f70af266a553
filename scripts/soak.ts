/**
 * `npm run soak`: pgbench writes to a real PostgreSQL cluster archiving through the bundled agent
 * into an s3rver "ingest" behind the fault proxy, which injects random faults drawn from a seed.
 * Base backups and dumps run on a schedule, replication and retention (the synthesized state
 * machines with the real handlers) every few seconds. Marks (a row count and the LSN after its
 * commit) are recorded throughout. At the end: PITR to SOAK_PITR_POINTS random marks is exact, the
 * archive has no gap, no stored byte holds the planted plaintext marker, and no process or temp file
 * of the run is left. Prints the seed and the counts. SOAK_SECONDS (default 600), SOAK_SEED,
 * SOAK_PITR_POINTS (default 20).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { Location, LocationFactory } from '../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../lambdas/lib/pipeline-env.ts';
import { archiveSettings, makeHarness, waitPromoted } from '../test/agent/wal/harness.ts';
import { type Faults, seededRandom, startFaultProxy } from '../test/support/fault-proxy.ts';
import { localPipelineEnv, replicationBindings, retentionBindings } from '../test/support/local-pipeline.ts';
import { PG_BIN, type PgCluster, startCluster, startExistingCluster } from '../test/support/pg-cluster.ts';
import { S3RVER_CREDENTIALS, s3rverStorage, startS3Server } from '../test/support/s3-server.ts';
import { runStateMachine, synthPipeline } from '../test/support/state-machines.ts';

const execFileAsync = promisify(execFile);
const seconds = Number(process.env.SOAK_SECONDS ?? 600);
const points = Number(process.env.SOAK_PITR_POINTS ?? 20);
const seed = Number(process.env.SOAK_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CLUSTER = 'soak';
const MARKER = `PGKEEP-SOAK-PLAINTEXT-${seed}`;
const awsKey = {
  AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SoakResult {
  seed: number;
  faults: Record<string, number>;
  retries: number;
  recoveries: number;
  marks: number;
  pitrChecked: number;
  archiveFailures: number;
}

/** The fault for the next period, drawn from the seeded generator; `{}` (none) one period in three. */
function drawFault(random: () => number): Faults {
  const kinds: Faults[] = [
    {},
    { error: 503, rate: 0.2 },
    { error: 'SlowDown', rate: 0.2 },
    { error: 500, rate: 0.1 },
    { latencyMs: 300, rate: 0.5 },
    { method: 'PUT', resetAfterBodyBytes: 4096, rate: 0.15 },
    { method: 'GET', truncateResponseAfterBytes: 100, rate: 0.15 },
  ];
  return kinds[Math.floor(random() * kinds.length)] ?? {};
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

export async function soak(): Promise<SoakResult> {
  const run = await soakRun();
  console.log(`soak: ${JSON.stringify(run.result)}`);
  // Nothing of the run is left: no process naming one of its directories (a restored server's WAL
  // prefetcher ends within a quarter second of its server; 5 s allows for a busy machine), none of
  // them on disk.
  let processes: string[] = [];
  for (let i = 0; i < 10; i++) {
    const { stdout } = await execFileAsync('ps', ['-eo', 'pid,args']);
    processes = stdout.split('\n').filter((l) => run.owned.some((dir) => l.includes(dir)));
    if (processes.length === 0) break;
    await sleep(500);
  }
  const dirs = run.owned.filter((dir) => existsSync(dir));
  if (processes.length > 0 || dirs.length > 0 || run.spoolTemp.length > 0)
    throw new Error(
      `left behind: processes ${JSON.stringify(processes)}, directories ${JSON.stringify(dirs)}, spool temp files ${JSON.stringify(run.spoolTemp)}`,
    );
  console.log('soak: passed');
  return run.result;
}

async function soakRun(): Promise<{ result: SoakResult; owned: string[]; spoolTemp: string[] }> {
  console.log(`soak: seed ${seed}, ${seconds} s, ${points} PITR points (replay with SOAK_SEED=${seed})`);
  const random = seededRandom(seed);
  const [ingestServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['dr-copy', 'b2-copy'] }),
  ]);
  const proxy = await startFaultProxy(ingestServer.endpoint, seed);
  const synth = synthPipeline();
  const h = await makeHarness(CLUSTER, {
    repository: `s3://ingest/?endpoint=${encodeURIComponent(proxy.endpoint)}&path-style=true&region=us-east-1`,
  });
  const clusters: PgCluster[] = [];
  const owned = [h.dir, ingestServer.directory, targetServer.directory];
  let spoolTemp: string[] = [];
  const ingest: Location = { name: 'ingest', storage: s3rverStorage(ingestServer.endpoint, 'ingest') };
  const dr: Location = { name: 'dr-aws', storage: s3rverStorage(targetServer.endpoint, 'dr-copy') };
  const b2: Location = { name: 'b2', storage: s3rverStorage(targetServer.endpoint, 'b2-copy') };
  const locations: LocationFactory = {
    ingest: async () => ingest,
    target: async (t) => (t.name === 'b2' ? b2 : dr),
  };
  const env: PipelineEnv = localPipelineEnv([CLUSTER], { drAws: 'dr-copy', b2: 'b2-copy' });
  const policy = { minimumKeep: 1, keepLast: 2 };
  const policies = { 'dr-aws': policy, b2: policy };
  let retries = 0;
  let recoveries = 0;
  let pipelineRuns = 0;
  let pipelineFailures = 0;
  const marks: { n: number; lsn: string }[] = [];
  let pgbench: ReturnType<typeof execFileAsync> | undefined;

  try {
    const primary = await startCluster({ settings: archiveSettings(h), serverEnv: awsKey });
    clusters.push(primary);
    owned.push(dirname(primary.dataDir));
    const pgEnv = { ...process.env, ...primary.env };
    await execFileAsync(join(PG_BIN, 'pgbench'), ['-i', '-s', '2', '-q'], { env: pgEnv });
    await primary.sql(`create table soak_marks (n int primary key); create table secret (v text);
      insert into secret values ('${MARKER}')`);
    const pgkeep = async (args: string[]) => {
      // An operation the faults break is retried, as a scheduler would; a success after a failure is a recovery.
      for (let attempt = 0; ; attempt++) {
        const result = await h.pgkeep(args, { ...awsKey, ...primary.env });
        if (result.code === 0) {
          if (attempt > 0) recoveries++;
          return result;
        }
        retries++;
        if (attempt >= 20) throw new Error(`pgkeep ${args.join(' ')} failed 20 times: ${result.stderr}`);
        await sleep(1000);
      }
    };
    // The first base backup before any mark, so that every mark can be restored to.
    await pgkeep(['basebackup']);

    pgbench = execFileAsync(join(PG_BIN, 'pgbench'), ['-c', '2', '-T', String(seconds), '-R', '50', '-n'], {
      env: pgEnv,
    });
    pgbench.catch(() => {});
    const start = Date.now();
    const end = start + seconds * 1000;
    let nextFault = start;
    let nextBase = start + (seconds * 1000) / 4;
    let nextDump = start + (seconds * 1000) / 3;
    let nextPipeline = start + 15_000;
    while (Date.now() < end) {
      const n = marks.length + 1;
      await primary.sql(`insert into soak_marks values (${n})`);
      marks.push({ n, lsn: await primary.sql('select pg_current_wal_lsn()') });
      const now = Date.now();
      if (now >= nextFault) {
        proxy.set(drawFault(random));
        nextFault = now + 5_000;
      }
      if (now >= nextBase) {
        await pgkeep(['basebackup']);
        nextBase = Date.now() + (seconds * 1000) / 4;
      } else if (now >= nextDump) {
        await pgkeep(['backup', '--db', 'postgres']);
        nextDump = Date.now() + (seconds * 1000) / 3;
      } else if (now >= nextPipeline) {
        pipelineRuns++;
        const alerts: unknown[] = [];
        const ok = await runStateMachine(
          synth.stateMachine('replication'),
          replicationBindings(env, locations, alerts, policies),
          {},
        ).then(
          () => true,
          () => false,
        );
        if (ok)
          await runStateMachine(
            synth.stateMachine('retention'),
            retentionBindings(env, locations, policies, alerts),
            {},
          );
        else pipelineFailures++;
        nextPipeline = Date.now() + 15_000;
      }
      await sleep(500 + random() * 1500);
    }
    await pgbench;
    proxy.set({});
    const last = await primary.sql('select pg_walfile_name(pg_switch_wal())');
    for (let i = 0; ; i++) {
      const row = await primary.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver");
      if (row >= last) break;
      if (i > 600) throw new Error(`WAL ${last} not archived after the faults stopped`);
      await sleep(100);
    }
    const archiveFailures = Number(await primary.sql('select failed_count from pg_stat_archiver'));
    retries += archiveFailures;

    // The archive has no gap (and the whole set-up checks out, the server still running).
    const check = await h.pgkeep(['check', '--archive'], { ...awsKey, ...primary.env });
    if (check.code !== 0)
      throw new Error(`pgkeep check --archive found a problem:\n${check.stdout}${check.stderr}`);
    console.log(
      check.stdout
        .split('\n')
        .filter((l) => l.includes('archive gaps'))
        .join('\n'),
    );
    await primary.stop();

    // PITR to random marks (from ingest, straight: the faults are over).
    const direct = {
      PGKEEP_REPOSITORY: `s3://ingest/?endpoint=${encodeURIComponent(ingestServer.endpoint)}&path-style=true&region=us-east-1`,
      ...awsKey,
    };
    const chosen = [...marks].sort(() => random() - 0.5).slice(0, points);
    let pitrChecked = 0;
    for (const mark of chosen) {
      const dir = join(h.dir, `pitr-${mark.n}`, 'data');
      const restore = await h.pgkeep(['restore', '--pgdata', dir, '--target-lsn', mark.lsn], direct);
      if (restore.code !== 0) throw new Error(`restore to ${mark.lsn} failed: ${restore.stderr}`);
      const copy = await startExistingCluster(dir, { settings: { archive_mode: 'off' }, serverEnv: direct });
      owned.push(dir);
      try {
        await waitPromoted(copy);
        const got = await copy.sql('select count(*) from soak_marks');
        if (Number(got) !== mark.n) throw new Error(`PITR to ${mark.lsn}: ${got} marks, expected ${mark.n}`);
        pitrChecked++;
      } finally {
        await copy.destroy();
      }
    }

    // No plaintext in any stored byte, at ingest or at a target.
    for (const server of [ingestServer, targetServer]) {
      for (const file of await filesUnder(server.directory)) {
        if ((await readFile(file)).includes(MARKER)) throw new Error(`plaintext marker found in ${file}`);
      }
    }
    const result: SoakResult = {
      seed,
      faults: { ...proxy.counts },
      retries,
      recoveries,
      marks: marks.length,
      pitrChecked,
      archiveFailures,
    };
    console.log(`soak: pipeline runs ${pipelineRuns}, failed ${pipelineFailures}`);
    // What the agent writes through a temp name and a rename; any left in the spool is a leak.
    spoolTemp = (await filesUnder(h.spoolDir)).filter((f) => /tmp|partial/i.test(basename(f)));
    return { result, owned, spoolTemp };
  } finally {
    pgbench?.child.kill();
    for (const c of clusters) await c.destroy().catch(() => {});
    synth.dispose();
    await proxy.stop();
    await Promise.all([ingestServer.stop(), targetServer.stop()]);
    await rm(h.dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  soak().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(`soak failed (seed ${seed}): ${error instanceof Error ? error.message : String(error)}`);
      process.exit(1);
    },
  );
}
