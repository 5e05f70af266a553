/**
 * `pgkeep wal-pusher`, the transient pusher `wal-push` starts when no service runs (what
 * pgBackRest calls archive-async): the service's push-ahead alone, for as long as there is WAL to
 * push. A cold Node process per segment cannot keep up with PostgreSQL's one-at-a-time
 * archive_command; one process that stays a little while and pushes several segments at a time
 * can, and its markers let archive_command return without starting Node.
 */
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { refuseRestoredDataDir } from '../physical/restored-marker.ts';
import { claimPidFile, readPidFile, releasePidFile } from '../pid-lock.ts';
import { Metrics } from '../service/metrics.ts';
import { WalPushAhead } from '../service/push-ahead.ts';
import { pushWalFile } from '../wal/push.ts';
import { WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './command.ts';
import { setUp } from './setup.ts';
import { walPushSettings, watchedPgWalDir } from './wal-options.ts';

/** How often the pusher checks for idleness and for a successor in the pid file. */
const CHECK_INTERVAL_MS = 250;

export const walPusher: Command = {
  summary: 'push ready WAL ahead for a while without the service (started by wal-push)',
  usage: `pgkeep wal-pusher [--pg-wal DIR]

Pushes every WAL file PostgreSQL marks ready (pg_wal/archive_status) with wal.pushParallelism at a
time and writes the markers that let archive_command return without starting Node, like the
service does, but without schedules or metrics. wal-push starts it in the background after its own
push when no service runs and wal.asyncSeconds is above 0. It holds the spool's pid file while it
runs (one pusher or service per cluster) and exits once nothing was left to push for
wal.asyncSeconds, on SIGTERM or SIGINT, or at once when \`pgkeep agent\` takes the pid file over;
pushes in flight are always finished first.
  --pg-wal DIR   pg_wal to watch (default: wal.pgWalDir, else $PGDATA/pg_wal, else ./pg_wal);
                 its data directory keys the spool`,
  async run(context) {
    // First of all: a SIGTERM from here on finishes pushes in flight instead of killing them.
    let signalled = false;
    const onSignal = () => {
      signalled = true;
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const { values } = parseCommandArgs(context.args, { 'pg-wal': { type: 'string' } });
    const { config, storage } = await setUp(context);
    const recipients = requireRecipients(config);
    const pgWalDir = watchedPgWalDir(config, context.env, values['pg-wal']);
    const dataDir = dirname(pgWalDir);
    await refuseRestoredDataDir(dataDir, config.cluster);
    const spool = new WalSpool(config.spoolDir, config.cluster, dataDir);
    const pid = process.pid;
    try {
      if (signalled || !(await claimPidFile(spool.agentPidFile, pid))) return ExitCode.ok;
      // Claims of a predecessor that died are void.
      await spool.clearClaims();
      let pushed = 0;
      const settings = walPushSettings(config, storage, recipients, spool, pgWalDir);
      const pushAhead = new WalPushAhead({
        pgWalDir,
        spool,
        repository: storage.displayUrl,
        // Ramps up from one: PostgreSQL is already waiting for the oldest ready segment, which
        // would otherwise share the CPU with pushParallelism - 1 others and be stored last.
        get parallelism() {
          return Math.min(config.wal.pushParallelism, 1 + pushed);
        },
        onEvent: (event) => {
          if (event.type === 'pushed') pushed++;
        },
        metrics: new Metrics(),
        push: (path) => pushWalFile({ ...settings, path }),
      });
      pushAhead.start();
      const idleMs = config.wal.asyncSeconds * 1000;
      let busyAt = Date.now();
      let idle = false;
      for (;;) {
        await sleep(CHECK_INTERVAL_MS);
        // The service (or another pusher after this one was presumed dead) took over.
        if (signalled || (await readPidFile(spool.agentPidFile)) !== pid) break;
        // Nothing queued or in flight (a failed push waiting out its back-off counts as nothing:
        // the archiver's own wal-push retries it and starts a pusher again after its next success).
        if (pushAhead.queueDepth > 0) busyAt = Date.now();
        else if (Date.now() - busyAt >= idleMs) {
          idle = true;
          break;
        }
      }
      // Give the pid file up first: from now on archive_command pushes itself instead of waiting
      // for markers this process will not write.
      await releasePidFile(spool.agentPidFile, pid);
      // A last scan removes the markers of files PostgreSQL has archived meanwhile.
      if (idle) await pushAhead.scanNow();
      await pushAhead.stop();
    } finally {
      await releasePidFile(spool.agentPidFile, pid);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
    return ExitCode.ok;
  },
};
