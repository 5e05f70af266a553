/**
 * WAL archiving and retrieval speed, side by side with pgBackRest, on the same real 16 MiB
 * segments (a pgbench write load), each command invoked one after another as PostgreSQL does:
 *
 *   pgbackrest archive-push          Debian's pgBackRest, posix repo, zst level 3, aes-256-cbc
 *   pgkeep wal-push (alone, sync)    no service, wal.asyncSeconds 0: one Node process per segment
 *   pgkeep wal-push (alone)          no service, as configured by default: the first call starts a
 *                                    transient pusher (wal.asyncSeconds) that pushes ahead
 *   pgkeep + agent, backlog          archive_command while `pgkeep agent`, started with every segment
 *                                    already ready, pushes them (the agent's throughput)
 *   pgkeep + agent, pushed ahead     archive_command once the agent has pushed the segments, as in
 *                                    steady operation (it pushes each the moment it is ready)
 *   pgbackrest archive-get           each segment fetched back, one after another
 *   pgkeep wal-fetch                 the same, with the background prefetch of following segments
 *
 * Targets (issue 3): pgkeep wal-push alone <= pgBackRest per segment; with the agent >= 3x faster.
 * wal-fetch with prefetch not slower than archive-get, measured both as restore_command calls back to
 * back and as a real recovery from a base backup replaying the archived segments. Then, under a sustained pgbench load with
 * the agent running, how far pg_stat_archiver falls behind (target: never more than 2 segments).
 * BENCH_SEGMENTS sets the number of segments (default 42); BENCH_LOAD_SECONDS the load (default 30),
 * BENCH_LOAD_WRITERS the bulk writers beside pgbench, one load phase per entry (default 1,2).
 */
import { execFile, spawn } from 'node:child_process';
import { chown, cp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import * as age from 'age-encryption';
import { archiveCommandLine, restoreCommandLine } from '../agent/wal/spool.ts';
import { makeServerDir, PG_BIN, startCluster, startExistingCluster } from '../test/support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE, stopWalPusher } from '../test/support/pgkeep-cli.ts';
import { log, mean, median, q, timedShell, writePgbackrestConfig } from './wal-bench-helpers.ts';

const execFileAsync = promisify(execFile);
const segmentCount = Number(process.env.BENCH_SEGMENTS ?? 42);
const loadSeconds = Number(process.env.BENCH_LOAD_SECONDS ?? 30);
/** BENCH_PARTS=compare,load (default both): the side-by-side comparison, the sustained load. */
const parts = new Set((process.env.BENCH_PARTS ?? 'compare,load').split(','));

const work = await makeServerDir('pgkeep-bench-wal-');
const socketDir = join(work, 'sock');
await mkdir(socketDir);
const user =
  process.getuid?.() === 0
    ? {
        uid: Number((await execFileAsync('id', ['-u', 'postgres'])).stdout),
        gid: Number((await execFileAsync('id', ['-g', 'postgres'])).stdout),
      }
    : undefined;
if (user) await chown(socketDir, user.uid, user.gid);
// archive_command stays empty: PostgreSQL keeps every finished segment as .ready for us.
const pg = await startCluster({
  settings: {
    archive_mode: 'on',
    wal_level: 'replica',
    max_wal_size: '4GB',
    unix_socket_directories: socketDir,
  },
});
const agents: ReturnType<typeof spawn>[] = [];
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const a of agents) if (a.exitCode === null) a.kill('SIGTERM');
    void pg.destroy().finally(() => process.exit(130));
  });
}
const baseParent = await makeServerDir('pgkeep-bench-base-');
const baseDir = join(baseParent, 'data');
try {
  const pgEnv = { ...process.env, ...pg.env };
  // The base backup recovery starts from (the replay comparison): taken before the WAL below, so
  // replaying that WAL needs every archived segment. -X stream: it carries the WAL it needs itself.
  await execFileAsync(join(PG_BIN, 'pg_basebackup'), ['-D', baseDir, '-X', 'stream', '-c', 'fast'], {
    env: pgEnv,
  });
  log(`generating ${segmentCount} WAL segments with pgbench...`);
  await execFileAsync(join(PG_BIN, 'pgbench'), ['-i', '-s', '30', '-q'], { env: pgEnv });
  const statusDir = join(pg.dataDir, 'pg_wal', 'archive_status');
  const ready = async () =>
    (await readdir(statusDir))
      .filter((f) => /^[0-9A-F]{24}\.ready$/.test(f))
      .map((f) => f.slice(0, 24))
      .sort();
  while ((await ready()).length < segmentCount) {
    await execFileAsync(join(PG_BIN, 'pgbench'), ['-n', '-c', '2', '-T', '5'], { env: pgEnv });
    await pg.sql('select pg_switch_wal()');
  }
  const segments = (await ready()).slice(0, segmentCount);
  log(`using ${segments.length} segments ${segments[0]}..${segments[segments.length - 1]}`);

  const identity = await age.generateHybridIdentity();
  const recipient = await age.identityToRecipient(identity);
  const identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
  const pgkeepConfig = async (name: string, wal: Record<string, unknown> = {}) => {
    const repo = join(work, `repo-${name}`);
    const spool = join(work, `spool-${name}`);
    await mkdir(repo);
    await mkdir(spool);
    const config = join(work, `pgkeep-${name}.yaml`);
    await writeFile(
      config,
      JSON.stringify({
        cluster: 'bench',
        repository: `file://${repo}`,
        recipients: [recipient],
        identityFile,
        spoolDir: spool,
        wal,
      }),
    );
    return { repo, spool, config, env: { PATH: process.env.PATH, PGKEEP_CONFIG: config } };
  };

  const br = join(work, 'pgbackrest');
  const brConfig = await writePgbackrestConfig(br, pg, socketDir);
  const brEnv = { PATH: process.env.PATH };
  await execFileAsync('pgbackrest', [`--config=${brConfig}`, '--stanza=bench', 'stanza-create'], {
    env: brEnv,
  });

  const results: Record<string, number[]> = {};
  const walPath = (s: string) => `pg_wal/${s}`;
  if (parts.has('compare')) {
    log('pgbackrest archive-push...');
    results['pgbackrest archive-push'] = [];
    for (const s of segments) {
      results['pgbackrest archive-push'].push(
        await timedShell(
          `pgbackrest --config=${q(brConfig)} --stanza=bench archive-push ${walPath(s)}`,
          pg.dataDir,
          brEnv,
        ),
      );
    }

    // Without the service, as PostgreSQL runs the generated archive_command line: first strictly
    // synchronous (wal.asyncSeconds 0: one cold Node process per segment), then as configured by
    // default, where the first wal-push starts a transient pusher that pushes the following
    // segments ahead (like pgBackRest's archive-async) and later calls find its markers.
    const aloneRuns = [
      ['pgkeep wal-push (alone, synchronous)', 'alone-sync', { asyncSeconds: 0 }],
      ['pgkeep wal-push (alone)', 'alone', {}],
    ] as const;
    const spools: Record<string, Awaited<ReturnType<typeof pgkeepConfig>>> = {};
    for (const [row, name, wal] of aloneRuns) {
      log(`${row}...`);
      const alone = await pgkeepConfig(name, wal);
      spools[name] = alone;
      const aloneLine = archiveCommandLine({
        nodePath: NODE,
        bundlePath: PGKEEP_BUNDLE,
        spoolDir: alone.spool,
        cluster: 'bench',
        configPath: alone.config,
      });
      const times: number[] = [];
      results[row] = times;
      for (const s of segments) {
        const command = aloneLine.replaceAll('%p', walPath(s)).replaceAll('%f', s);
        times.push(await timedShell(command, pg.dataDir, alone.env));
      }
      await stopWalPusher(alone.spool, 'bench', pg.dataDir);
    }
    const alone = spools.alone as Awaited<ReturnType<typeof pgkeepConfig>>;

    log('pgkeep with the agent pushing ahead...');
    const withAgent = await pgkeepConfig('agent');
    const agent = spawn(NODE, [PGKEEP_BUNDLE, 'agent'], {
      env: { ...withAgent.env, PGDATA: pg.dataDir, PGKEEP_METRICS_LISTEN: '127.0.0.1:0' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    agents.push(agent);
    await new Promise<void>((resolve) =>
      agent.stderr?.on('data', (d: Buffer) => d.toString().includes('started') && resolve()),
    );
    const line = archiveCommandLine({
      nodePath: NODE,
      bundlePath: PGKEEP_BUNDLE,
      spoolDir: withAgent.spool,
      cluster: 'bench',
      configPath: withAgent.config,
    });
    // First pass: every segment was ready before the agent started, so each archive_command waits
    // for the agent's push: the agent's throughput on a backlog. Second pass: the agent has pushed
    // them all (it is ahead), as in steady operation, where it pushes each segment the moment
    // PostgreSQL marks it ready: archive_command finds the marker and returns without Node.
    results['pgkeep + agent, backlog'] = [];
    const agentStarted = performance.now();
    for (const s of segments) {
      const command = line.replaceAll('%p', walPath(s)).replaceAll('%f', s);
      results['pgkeep + agent, backlog'].push(await timedShell(command, pg.dataDir, withAgent.env));
    }
    const agentTotal = performance.now() - agentStarted;
    results['pgkeep + agent, pushed ahead'] = [];
    for (const s of segments) {
      const command = line.replaceAll('%p', walPath(s)).replaceAll('%f', s);
      results['pgkeep + agent, pushed ahead'].push(await timedShell(command, pg.dataDir, withAgent.env));
    }
    agent.kill('SIGTERM');

    log('pgbackrest archive-get...');
    const fetchDir = join(work, 'fetch');
    await mkdir(fetchDir);
    results['pgbackrest archive-get'] = [];
    for (const s of segments) {
      results['pgbackrest archive-get'].push(
        await timedShell(
          `pgbackrest --config=${q(brConfig)} --stanza=bench archive-get ${s} ${q(join(fetchDir, 'RECOVERYXLOG'))}`,
          pg.dataDir,
          brEnv,
        ),
      );
    }
    log('pgkeep wal-fetch with prefetch (the restore_command line pgkeep restore writes)...');
    const fetchLine = restoreCommandLine({
      nodePath: NODE,
      bundlePath: PGKEEP_BUNDLE,
      spoolDir: alone.spool,
      cluster: 'bench',
      configPath: alone.config,
    });
    results['pgkeep wal-fetch (prefetch)'] = [];
    for (const s of segments) {
      const command = fetchLine.replaceAll('%f', s).replaceAll('%p', q(join(fetchDir, 'RECOVERYXLOG')));
      results['pgkeep wal-fetch (prefetch)'].push(await timedShell(command, fetchDir, alone.env));
    }

    // Recovery itself: the base backup replays the archived segments with each tool's
    // restore_command, until the archive ends and it promotes. pgkeep's repository is the one the
    // synchronous wal-push filled, which holds exactly these segments, as pgBackRest's does.
    log('recovery replaying the archive, restore_command by each tool...');
    const replayFrom = spools['alone-sync'] as Awaited<ReturnType<typeof pgkeepConfig>>;
    if (user) {
      for (const dir of [br, replayFrom.repo, replayFrom.spool, replayFrom.config, identityFile])
        await execFileAsync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
    }
    const replayCommands = {
      // pgBackRest checks that it runs in its configured data directory.
      pgbackrest: (dataDir: string) =>
        `pgbackrest --config=${q(brConfig)} --stanza=bench --pg1-path=${q(dataDir)} archive-get %f "%p"`,
      pgkeep: () =>
        restoreCommandLine({
          nodePath: NODE,
          bundlePath: PGKEEP_BUNDLE,
          spoolDir: replayFrom.spool,
          cluster: 'bench',
          configPath: replayFrom.config,
        }),
    };
    const replays: Record<string, number[]> = { pgbackrest: [], pgkeep: [] };
    for (let round = 0; round < 2; round++) {
      for (const [tool, restoreCommandFor] of Object.entries(replayCommands)) {
        const dataDir = join(await makeServerDir('pgkeep-bench-replay-'), 'data');
        await cp(baseDir, dataDir, { recursive: true });
        await writeFile(join(dataDir, 'recovery.signal'), '');
        const started = performance.now();
        const restored = await startExistingCluster(dataDir, {
          settings: { restore_command: restoreCommandFor(dataDir), archive_mode: 'off', max_wal_size: '4GB' },
        });
        try {
          while ((await restored.sql('select pg_is_in_recovery()')) === 't') await sleep(20);
          replays[tool]?.push(performance.now() - started);
          const last = await restored.sql(
            `select substr(pg_walfile_name(pg_current_wal_lsn()), 9) >= '${(segments[segments.length - 1] as string).slice(8)}'`,
          );
          if (last !== 't')
            throw new Error(
              `${tool}: recovery ended before the last archived segment:\n${restored.log().slice(-3000)}`,
            );
        } finally {
          await restored.destroy();
        }
      }
    }

    console.log(`\n${segments.length} segments of 16 MiB (pgbench), sequential invocations, ms per segment:`);
    console.log(`${'command'.padEnd(36)} ${'median'.padStart(8)} ${'mean'.padStart(8)}`);
    for (const [name, times] of Object.entries(results)) {
      console.log(
        `${name.padEnd(36)} ${median(times).toFixed(0).padStart(8)} ${mean(times).toFixed(0).padStart(8)}`,
      );
    }
    const brMean = mean(results['pgbackrest archive-push']);
    const ratio = (name: string) => (brMean / mean(results[name] as number[])).toFixed(1);
    console.log(
      `\npgkeep alone vs pgBackRest (mean): ${(mean(results['pgkeep wal-push (alone)'] as number[]) / brMean).toFixed(2)}x the time` +
        ` (synchronous: ${(mean(results['pgkeep wal-push (alone, synchronous)'] as number[]) / brMean).toFixed(2)}x)` +
        `\npgkeep + agent, pushed ahead vs pgBackRest (mean): ${ratio('pgkeep + agent, pushed ahead')}x faster` +
        `\npgkeep + agent, backlog vs pgBackRest (wall time per segment ${(agentTotal / segments.length).toFixed(0)} ms from the agent's start): ${(brMean / (agentTotal / segments.length)).toFixed(1)}x faster` +
        `\nwal-fetch vs archive-get (mean): ${(mean(results['pgkeep wal-fetch (prefetch)']) / mean(results['pgbackrest archive-get'])).toFixed(2)}x the time`,
    );
    const secs = (xs: number[] | undefined) => (xs ?? []).map((x) => (x / 1000).toFixed(2)).join(', ');
    console.log(
      `\nrecovery from a base backup replaying the ${segments.length} archived segments to the end (s, two rounds each): ` +
        `pgBackRest archive-get ${secs(replays.pgbackrest)}; pgkeep wal-fetch with prefetch ${secs(replays.pgkeep)}; ` +
        `pgkeep takes ${(mean(replays.pgkeep as number[]) / mean(replays.pgbackrest as number[])).toFixed(2)}x the time`,
    );
  }

  // Sustained load: archive through the agent and sample how many segments wait to be archived.
  if (parts.has('load') && loadSeconds > 0) {
    log(`archiving under ${loadSeconds} s of pgbench load with the agent...`);
    const loaded = await pgkeepConfig('load');
    if (user)
      for (const p of [loaded.repo, loaded.spool, loaded.config, identityFile])
        await chown(p, user.uid, user.gid);
    const loadAgent = spawn(NODE, [PGKEEP_BUNDLE, 'agent'], {
      ...(user ?? {}),
      env: { ...loaded.env, PGDATA: pg.dataDir, PGKEEP_METRICS_LISTEN: '127.0.0.1:0' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    agents.push(loadAgent);
    await new Promise<void>((resolve) =>
      loadAgent.stderr?.on('data', (d: Buffer) => d.toString().includes('started') && resolve()),
    );
    const command = archiveCommandLine({
      nodePath: NODE,
      bundlePath: PGKEEP_BUNDLE,
      spoolDir: loaded.spool,
      cluster: 'bench',
      configPath: loaded.config,
    });
    await pg.sql(`alter system set archive_command = '${command.replaceAll("'", "''")}'`);
    await pg.sql('select pg_reload_conf()');
    // Let the backlog from the measurements above drain first.
    for (let i = 0; i < 600 && (await ready()).length > 0; i++) await new Promise((r) => setTimeout(r, 500));
    // pgbench alone writes little WAL on a small machine; bulk writers beside it make the archiver
    // work (one writer: about one segment a second here; two: about 1.5, with both cores saturated).
    for (const writers of (process.env.BENCH_LOAD_WRITERS ?? '1,2').split(',').map(Number)) {
      let maxBehind = 0;
      const samples: number[] = [];
      const pgbenchRun = execFileAsync(
        join(PG_BIN, 'pgbench'),
        ['-n', '-c', '4', '-T', String(loadSeconds)],
        { env: pgEnv },
      );
      let running = true;
      const bulk = Promise.all(
        Array.from({ length: writers }, async (_, i) => {
          await pg.sql(`create table if not exists filler${i} (g int, m text)`);
          while (running) {
            await pg.sql(`insert into filler${i} select g, md5(g::text) from generate_series(1, 100000) g`);
            await pg.sql(`truncate filler${i}`);
          }
        }),
      );
      const load = pgbenchRun.finally(() => {
        running = false;
      });
      const startLsn = await pg.sql('select pg_current_wal_lsn()');
      while (running) {
        const behind = (await ready()).length;
        samples.push(behind);
        maxBehind = Math.max(maxBehind, behind);
        await new Promise((r) => setTimeout(r, 200));
      }
      await load;
      await bulk;
      const walMb = Number(
        await pg.sql(`select round(pg_wal_lsn_diff(pg_current_wal_lsn(), '${startLsn}') / 1048576)`),
      );
      console.log(
        `\nsustained load (pgbench -c 4 and ${writers} bulk writer${writers === 1 ? '' : 's'}): ${walMb} MiB of WAL in ${loadSeconds} s (${(walMb / 16 / loadSeconds).toFixed(2)} segments/s); ` +
          `segments waiting to be archived: max ${maxBehind}, median ${median(samples)} (${samples.length} samples)`,
      );
      for (let i = 0; i < 600 && (await ready()).length > 0; i++)
        await new Promise((r) => setTimeout(r, 500));
    }
  }
} finally {
  for (const a of agents) if (a.exitCode === null) a.kill('SIGTERM');
  await pg.destroy();
  await rm(work, { recursive: true, force: true });
  await rm(baseParent, { recursive: true, force: true });
}
