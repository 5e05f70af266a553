import { requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { takeBaseBackup } from '../physical/basebackup.ts';
import { withBackupLock } from '../service/backup-lock.ts';
import { AGENT_VERSION } from '../version.ts';
import { clusterSpoolRoot } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './command.ts';
import { formatBytes, progressLine, setUp } from './setup.ts';

export const basebackup: Command = {
  summary: 'take a physical base backup (pg_basebackup) for point-in-time recovery',
  usage: `pgkeep basebackup [--json] [--wal-wait-seconds N]

Streams pg_basebackup (tar format, tablespaces included), compressed and encrypted, into the
repository; waits until the WAL that makes the backup consistent is archived; then writes the
manifest (timeline, start and stop LSN). The backup exists only once the manifest does.
Connects with the libpq variables (PGHOST, PGPORT, PGUSER; a role with REPLICATION).
  --json                 print the manifest as JSON on success
  --wal-wait-seconds N   how long to wait for the backup's WAL to be archived (default 600)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      json: { type: 'boolean', default: false },
      'wal-wait-seconds': { type: 'string' },
    });
    const { config, storage, pg } = await setUp(context);
    const progress = progressLine(context);
    // One backup at a time per cluster: the agent's schedules take the same lock.
    const spoolRoot = clusterSpoolRoot(config.spoolDir, config.cluster);
    const { manifest } = await withBackupLock(spoolRoot, 'pgkeep basebackup', () =>
      takeBaseBackup({
        storage,
        pg,
        cluster: config.cluster,
        recipients: requireRecipients(config),
        spoolDir: config.spoolDir,
        zstdLevel: config.zstdLevel,
        agentVersion: AGENT_VERSION,
        ...(values['wal-wait-seconds'] ? { walWaitSeconds: Number(values['wal-wait-seconds']) } : {}),
        onProgress: (e) => progress.update(`${e.archive}.tar: ${formatBytes(e.plaintextBytes)}`),
      }),
    );
    progress.done();
    if (values.json) {
      context.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
    } else {
      const plain = manifest.objects.reduce((sum, o) => sum + o.plaintextSizeBytes, 0);
      context.stdout.write(
        `base backup ${manifest.backupId}: timeline ${manifest.timeline}, ${manifest.startLsn} to ${manifest.stopLsn}, ` +
          `${formatBytes(plain)} in ${manifest.objects.length} archive(s)\n`,
      );
    }
    return ExitCode.ok;
  },
};
