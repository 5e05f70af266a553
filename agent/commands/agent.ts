import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ConfigError, requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { runLogicalBackup } from '../logical/backup.ts';
import { sweepStaleStaging } from '../physical/archive-pipes.ts';
import { takeBaseBackup } from '../physical/basebackup.ts';
import { refuseRestoredDataDir } from '../physical/restored-marker.ts';
import { BackupRunningError, withBackupLock } from '../service/backup-lock.ts';
import type { ScheduledJob } from '../service/scheduler.ts';
import { type ServiceEvent, startService } from '../service/service.ts';
import { AGENT_VERSION } from '../version.ts';
import { mib } from '../wal/backlog.ts';
import { pushWalFile } from '../wal/push.ts';
import { WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import type { Command, CommandContext } from './command.ts';
import { setUp } from './setup.ts';
import { walPushSettings } from './wal-options.ts';

export const agent: Command = {
  summary: 'run the service: push WAL ahead, scheduled backups, metrics (systemd runs this)',
  usage: `pgkeep agent

Runs until SIGTERM or SIGINT. Pushes every WAL file PostgreSQL marks ready (pg_wal/archive_status)
with wal.pushParallelism at a time, so archive_command returns at once; takes the logical and base
backups of schedules.logical and schedules.base (cron), one at a time; serves Prometheus metrics
on metrics.listen. pg_wal is wal.pgWalDir, or $PGDATA/pg_wal. On SIGTERM it lets pushes in flight
finish, aborts a running backup (which then leaves no manifest and no partial object) and exits.`,
  async run(context) {
    parseCommandArgs(context.args, {});
    const { config, storage, pg } = await setUp(context);
    const recipients = requireRecipients(config);
    const pgWalDir = await watchedWalDir(config.wal.pgWalDir, context.env.PGDATA);
    await refuseRestoredDataDir(dirname(pgWalDir), config.cluster);
    const spool = new WalSpool(config.spoolDir, config.cluster, dirname(pgWalDir));
    await spool.ensureWritable();
    await sweepStaging(context, spool.root);
    const jobs: ScheduledJob[] = [];
    if (config.schedules.logical) {
      jobs.push({
        kind: 'logical',
        cron: config.schedules.logical,
        run: async () => {
          const manifest = await runLogicalBackup({
            storage,
            pg,
            cluster: config.cluster,
            recipients,
            databases: config.databases,
            zstdLevel: config.zstdLevel,
            parallelism: config.backup.parallelism,
          });
          return manifest.objects.reduce((sum, o) => sum + o.sizeBytes, 0);
        },
      });
    }
    // Also taken, scheduled or not, once WAL dropped at the backlog limit is recorded.
    const baseJob: ScheduledJob = {
      kind: 'base',
      cron: config.schedules.base ?? '',
      run: async (signal) => {
        const { manifest } = await takeBaseBackup({
          storage,
          pg,
          cluster: config.cluster,
          recipients,
          spoolDir: config.spoolDir,
          zstdLevel: config.zstdLevel,
          agentVersion: AGENT_VERSION,
          signal,
        });
        return manifest.objects.reduce((sum, o) => sum + o.sizeBytes, 0);
      },
    };
    if (config.schedules.base) jobs.push(baseJob);
    const service = await startService({
      config,
      storage,
      pgWalDir,
      spool,
      jobs,
      gapBackup: baseJob,
      onEvent: (event) => log(context, event),
      push: (path) => pushWalFile({ ...walPushSettings(config, storage, recipients, spool, pgWalDir), path }),
    });
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    await service.stop();
    return ExitCode.ok;
  },
};

/** pg_wal to watch; a service that watches nothing would look healthy and push nothing. */
async function watchedWalDir(configured: string | undefined, pgData: string | undefined): Promise<string> {
  if (configured === undefined && !pgData) {
    throw new ConfigError(
      'PGDATA is not set and the config has no wal.pgWalDir: set PGDATA to the data directory ' +
        '(pgkeep systemd-unit --pgdata DIR writes it into the unit) or set wal.pgWalDir',
    );
  }
  const dir = configured ?? join(pgData as string, 'pg_wal');
  const isDir = await stat(dir).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!isDir) {
    const from = configured === undefined ? `PGDATA=${pgData}` : `wal.pgWalDir`;
    throw new ConfigError(
      `${dir} (from ${from}) is not a directory this user can see: point ${from.split('=')[0]} at the cluster's data directory (its pg_wal)`,
    );
  }
  return dir;
}

/**
 * Removes what a killed base backup left in the spool, under the backup lock so that a `pgkeep
 * basebackup` running by hand keeps its own (it sweeps when it starts, too).
 */
async function sweepStaging(context: CommandContext, spoolRoot: string): Promise<void> {
  try {
    const removed = await withBackupLock(spoolRoot, 'pgkeep agent (sweeping the spool)', () =>
      sweepStaleStaging(spoolRoot),
    );
    if (removed.length > 0)
      context.stderr.write(`pgkeep agent: removed stale base backup staging: ${removed.join(', ')}\n`);
  } catch (error) {
    if (!(error instanceof BackupRunningError)) throw error;
  }
}

/** One line per event on stderr: the journal's timestamps are enough. */
function log(context: CommandContext, event: ServiceEvent): void {
  const line = (() => {
    switch (event.type) {
      case 'started':
        return `started: ${event.detail}`;
      case 'stopped':
        return 'stopped';
      case 'pushed':
        return event.outcome === 'stored' ? `pushed ${event.walFileName} in ${event.ms} ms` : undefined;
      case 'push-failed':
        return `push of ${event.walFileName} failed, retrying in ${Math.round(event.retryInMs / 1000)} s: ${event.error.message}`;
      case 'backup-started':
        return `${event.kind} backup started`;
      case 'backup-finished':
        return `${event.kind} backup finished in ${Math.round(event.ms / 1000)} s`;
      case 'backup-skipped':
        return `${event.kind} backup skipped: ${event.reason}`;
      case 'backup-failed':
        return `${event.kind} backup failed: ${event.error.message}`;
      case 'wal-backlog':
        return event.level === 'ok'
          ? `WAL backlog back to ${mib(event.bytes)}`
          : `WARNING: WAL backlog ${mib(event.bytes)} is past ${event.level === 'warn' ? `wal.backlogWarnBytes (${mib(event.warnBytes)})` : `wal.maxBacklogBytes (${mib(event.maxBytes)})`}`;
      case 'wal-gap-recorded':
        return `recorded the WAL gap ${event.gap.first} to ${event.gap.last} (dropped at the backlog limit)`;
      case 'wal-gap-backup':
        return `WAL was dropped at the backlog limit (recorded gaps: ${event.gaps.join(', ')}); taking a base backup now`;
    }
  })();
  if (line) context.stderr.write(`pgkeep agent: ${line}\n`);
}
