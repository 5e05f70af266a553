/**
 * WAL archiving and retrieval speed, side by side with pgBackRest, on the same real 16 MiB
 * segments (a pgbench write load), each command invoked one after another as PostgreSQL does:
 *
 *   pgbackrest archive-push          Debian's pgBackRest, posix repo, zst level 3, aes-256-cbc
 *   pgbackrest archive-push (async)  the same with archive-async=y, process-max=2
 *   pgkeep wal-push (alone, sync)    no service, wal.asyncSeconds 0: one Node process per segment
 *   pgkeep wal-push (alone)          no service, as configured by default: the first call starts a
 *                                    transient pusher (wal.asyncSeconds) that pushes ahead
 *   pgkeep + agent, backlog          archive_command while `pgkeep agent`, started with every segment
 *                                    already ready, pushes them (the agent's throughput)
 *   pgkeep + agent, pushed ahead     archive_command once the agent has pushed the segments, as in
 *                                    steady operation (it pushes each the moment it is ready)
 *   pgbackrest archive-get           each segment fetched back, one after another
 *   pgbackrest archive-get (async)   the same with archive-async=y and archive-get-queue-max (prefetch)
 *   pgkeep wal-fetch                 the same, with the background prefetch of following segments
 *
 * Targets (issue 11): synchronous against synchronous, pgkeep <= 1.3x pgBackRest per segment; these
 * rows alternate segment by segment and record CPU time, which load disturbs less than the wall
 * clock. wal-fetch with prefetch not slower than archive-get, sync or async, as restore_command
 * calls back to back and as a real recovery from a base backup replaying the archived segments. Then, under a sustained pgbench load, the archive lag (seconds from
 * `.ready` to archived) of pgkeep's default (transient pusher) against pgBackRest async: no
 * worse at the median and p99 (wal-load-helpers.ts), and with the agent.
 * BENCH_SEGMENTS sets the number of segments (default 42); BENCH_LOAD_SECONDS the load (default 30),
 * BENCH_LOAD_WRITERS the bulk writers beside pgbench, one load phase per entry (default 1,2).
 * BENCH_WAL_ROWS=sync runs only the synchronous rows; BENCH_WAL_BASELINE=/path/to/pgkeep.mjs adds
 * another build to them, into a repository of its own (an A/B of a change).
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
import {
  alternate,
  log,
  type PgkeepBenchConfig,
  printComparison,
  printRecovery,
  printSynchronous,
  q,
  type TimedRows,
  timedShell,
  timedShellCpu,
  writePgbackrestConfig,
  writePgkeepConfig,
} from './wal-bench-helpers.ts';
import { archiveUnderLoad, describeLoad, LOAD_HEADER, setArchiveCommand } from './wal-load-helpers.ts';

const execFileAsync = promisify(execFile);
const segmentCount = Number(process.env.BENCH_SEGMENTS ?? 42);
const loadSeconds = Number(process.env.BENCH_LOAD_SECONDS ?? 30);
/** BENCH_PARTS=compare,load (default both): the side-by-side comparison, the sustained load. */
const parts = new Set((process.env.BENCH_PARTS ?? 'compare,load').split(','));
const onlySync = process.env.BENCH_WAL_ROWS === 'sync';
const baseline = process.env.BENCH_WAL_BASELINE;
/** Ends the run after the synchronous rows (BENCH_WAL_ROWS=sync) through the clean-up below. */
class Done extends Error {}

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
  const identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
  const keys = { recipient: await age.identityToRecipient(identity), identityFile };
  const pgkeepConfig = (name: string, wal: Record<string, unknown> = {}) =>
    writePgkeepConfig(work, name, keys, wal);

  const br = join(work, 'pgbackrest');
  const brConfig = await writePgbackrestConfig(br, pg, socketDir);
  const brAsync = join(work, 'pgbackrest-async');
  const brAsyncConfig = await writePgbackrestConfig(brAsync, pg, socketDir, true);
  const brEnv = { PATH: process.env.PATH };
  for (const config of [brConfig, brAsyncConfig]) {
    await execFileAsync('pgbackrest', [`--config=${config}`, '--stanza=bench', 'stanza-create'], {
      env: brEnv,
    });
  }

  const results: Record<string, number[]> = {};
  /** CPU ms (user + system of the command tree) of the rows that record it. */
  const cpu: Record<string, number[]> = {};
  const walPath = (s: string) => `pg_wal/${s}`;
  if (parts.has('compare')) {
    // Without the service, as PostgreSQL runs the generated archive_command line: strictly
    // synchronous (wal.asyncSeconds 0: one cold Node process per segment), or as configured by
    // default, where the first wal-push starts a transient pusher that pushes the following
    // segments ahead (like pgBackRest's archive-async) and later calls find its markers.
    const spools: Record<string, PgkeepBenchConfig> = {};
    const aloneLine = async (name: string, wal: Record<string, unknown>, bundlePath = PGKEEP_BUNDLE) => {
      const alone = await pgkeepConfig(name, wal);
      spools[name] = alone;
      const line = archiveCommandLine({
        nodePath: NODE,
        bundlePath,
        spoolDir: alone.spool,
        cluster: 'bench',
        configPath: alone.config,
      });
      return (s: string) => line.replaceAll('%p', walPath(s)).replaceAll('%f', s);
    };
    const brPush = (config: string, s: string) =>
      `pgbackrest --config=${q(config)} --stanza=bench archive-push ${walPath(s)}`;

    // Synchronous against synchronous, in alternating order (wal-bench-helpers.ts alternate).
    log('pgbackrest archive-push and pgkeep wal-push (alone, synchronous), alternating...');
    const syncLine = await aloneLine('alone-sync', { asyncSeconds: 0 });
    const sync: TimedRows = {
      'pgbackrest archive-push': (s) => timedShellCpu(brPush(brConfig, s), pg.dataDir, brEnv),
      'pgkeep wal-push (alone, synchronous)': (s) =>
        timedShellCpu(syncLine(s), pg.dataDir, spools['alone-sync']?.env ?? {}),
    };
    if (baseline) {
      const baselineLine = await aloneLine('baseline-sync', { asyncSeconds: 0 }, baseline);
      sync[`baseline ${baseline}`] = (s) =>
        timedShellCpu(baselineLine(s), pg.dataDir, spools['baseline-sync']?.env ?? {});
    }
    await alternate(segments, sync, results, cpu);
    if (onlySync) {
      printSynchronous('pgbackrest archive-push', results, cpu);
      throw new Done();
    }

    log('pgbackrest archive-push (async)...');
    results['pgbackrest archive-push (async)'] = [];
    for (const s of segments) {
      results['pgbackrest archive-push (async)'].push(
        await timedShell(brPush(brAsyncConfig, s), pg.dataDir, brEnv),
      );
    }
    log('pgkeep wal-push (alone)...');
    const defaultLine = await aloneLine('alone', {});
    results['pgkeep wal-push (alone)'] = [];
    for (const s of segments) {
      results['pgkeep wal-push (alone)'].push(
        await timedShell(defaultLine(s), pg.dataDir, spools.alone?.env ?? {}),
      );
    }
    const alone = spools.alone as PgkeepBenchConfig;
    await stopWalPusher(alone.spool, 'bench', pg.dataDir);

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

    const fetchDir = join(work, 'fetch');
    await mkdir(fetchDir);
    for (const [row, config] of [
      ['pgbackrest archive-get', brConfig],
      ['pgbackrest archive-get (async)', brAsyncConfig],
    ] as const) {
      log(`${row}...`);
      const times: number[] = [];
      results[row] = times;
      for (const s of segments) {
        const command = `pgbackrest --config=${q(config)} --stanza=bench archive-get ${s} ${q(join(fetchDir, 'RECOVERYXLOG'))}`;
        times.push(await timedShell(command, pg.dataDir, brEnv));
      }
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
    const replayFrom = spools['alone-sync'] as PgkeepBenchConfig;
    if (user) {
      for (const dir of [br, brAsync, replayFrom.repo, replayFrom.spool, replayFrom.config, identityFile])
        await execFileAsync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
    }
    const replayCommands = {
      // pgBackRest checks that it runs in its configured data directory.
      pgbackrest: (dataDir: string) =>
        `pgbackrest --config=${q(brConfig)} --stanza=bench --pg1-path=${q(dataDir)} archive-get %f "%p"`,
      'pgbackrest async': (dataDir: string) =>
        `pgbackrest --config=${q(brAsyncConfig)} --stanza=bench --pg1-path=${q(dataDir)} archive-get %f "%p"`,
      pgkeep: () =>
        restoreCommandLine({
          nodePath: NODE,
          bundlePath: PGKEEP_BUNDLE,
          spoolDir: replayFrom.spool,
          cluster: 'bench',
          configPath: replayFrom.config,
        }),
    };
    const replays: Record<string, number[]> = { pgbackrest: [], 'pgbackrest async': [], pgkeep: [] };
    for (let round = 0; round < 2; round++) {
      for (const [tool, restoreCommandFor] of Object.entries(replayCommands)) {
        // Each recovery starts with an empty prefetch queue, as a real one does.
        await rm(join(brAsync, 'spool', 'archive'), { recursive: true, force: true });
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

    printComparison(segments.length, results, cpu, agentTotal);
    printRecovery(segments.length, replays);
  }

  // Sustained load: the archive lag of each tool as PostgreSQL's archive_command, run as postgres.
  if (parts.has('load') && loadSeconds > 0) {
    const line = async (name: string) => {
      const c = await pgkeepConfig(name);
      const paths = [c.repo, c.spool, c.config];
      if (user) for (const p of paths) await chown(p, user.uid, user.gid);
      const command = archiveCommandLine({
        nodePath: NODE,
        bundlePath: PGKEEP_BUNDLE,
        spoolDir: c.spool,
        cluster: 'bench',
        configPath: c.config,
      });
      return { ...c, command };
    };
    if (user) {
      for (const p of [br, brAsync, identityFile])
        await execFileAsync('chown', ['-R', `${user.uid}:${user.gid}`, p]);
    }
    const pusher = await line('load-pusher');
    const withAgent = await line('load-agent');
    const tools: [string, string, () => Promise<() => Promise<void>>][] = [
      [
        'pgkeep (default: transient pusher)',
        pusher.command,
        async () => () => stopWalPusher(pusher.spool, 'bench', pg.dataDir),
      ],
      [
        'pgbackrest archive-async, process-max 2',
        `pgbackrest --config=${q(brAsyncConfig)} --stanza=bench archive-push "%p"`,
        async () => async () => {},
      ],
      [
        'pgkeep + agent',
        withAgent.command,
        async () => {
          const agent = spawn(NODE, [PGKEEP_BUNDLE, 'agent'], {
            ...(user ?? {}),
            env: { ...withAgent.env, PGDATA: pg.dataDir, PGKEEP_METRICS_LISTEN: '127.0.0.1:0' },
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          agents.push(agent);
          await new Promise<void>((resolve) =>
            agent.stderr?.on('data', (d: Buffer) => d.toString().includes('started') && resolve()),
          );
          return async () => {
            agent.kill('SIGTERM');
          };
        },
      ],
    ];
    const lines: string[] = [];
    // pgbench alone writes little WAL on a small machine; bulk writers beside it make the archiver
    // work (one writer: about one segment a second here; two: about 1.5, with both cores saturated).
    for (const writers of (process.env.BENCH_LOAD_WRITERS ?? '1,2').split(',').map(Number)) {
      for (const [tool, command, start] of tools) {
        log(`${tool}: ${loadSeconds} s of pgbench and ${writers} bulk writers...`);
        const stop = await start();
        await setArchiveCommand(pg, command);
        try {
          lines.push(describeLoad(tool, writers, await archiveUnderLoad(pg, loadSeconds, writers)));
        } finally {
          await stop();
        }
      }
    }
    console.log(
      `\nsustained load (pgbench -c 4 plus bulk writers, ${loadSeconds} s), archive lag from .ready to archived:`,
    );
    console.log(LOAD_HEADER);
    for (const l of lines) console.log(l);
  }
} catch (error) {
  if (!(error instanceof Done)) throw error;
} finally {
  for (const a of agents) if (a.exitCode === null) a.kill('SIGTERM');
  await pg.destroy();
  await rm(work, { recursive: true, force: true });
  await rm(baseParent, { recursive: true, force: true });
}
