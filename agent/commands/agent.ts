import { dirname, join, resolve } from 'node:path';
import { requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { runLogicalBackup } from '../logical/backup.ts';
import { takeBaseBackup } from '../physical/basebackup.ts';
import { refuseRestoredDataDir } from '../physical/restored-marker.ts';
import type { ScheduledJob } from '../service/scheduler.ts';
import { type ServiceEvent, startService } from '../service/service.ts';
import { AGENT_VERSION } from '../version.ts';
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
    const pgWalDir =
      config.wal.pgWalDir ?? (context.env.PGDATA ? join(context.env.PGDATA, 'pg_wal') : undefined);
    if (pgWalDir) await refuseRestoredDataDir(dirname(pgWalDir), config.cluster);
    const spool = new WalSpool(config.spoolDir, config.cluster, dirname(pgWalDir ?? resolve('pg_wal')));
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
          });
          return manifest.objects.reduce((sum, o) => sum + o.sizeBytes, 0);
        },
      });
    }
    if (config.schedules.base) {
      jobs.push({
        kind: 'base',
        cron: config.schedules.base,
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
      });
    }
    const service = await startService({
      config,
      storage,
      pgWalDir,
      spool,
      jobs,
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
    }
  })();
  if (line) context.stderr.write(`pgkeep agent: ${line}\n`);
}
