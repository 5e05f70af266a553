import { ExitCode } from '../exit-codes.ts';
import { listManifests } from '../repository.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './command.ts';
import { formatBytes, setUp } from './setup.ts';

export const list: Command = {
  summary: 'list the backups in the repository',
  usage: `pgkeep list [--json]

Lists the cluster's backups, oldest first. Reads only manifests: no identity needed.
  --json   one JSON array of {backupId, kind, startTime, stopTime, databases, sizeBytes, ...}`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, { json: { type: 'boolean', default: false } });
    const { config, storage } = await setUp(context, { readsWal: true });
    const manifests = await listManifests(storage, config.cluster);
    const rows = manifests.map((m) => ({
      backupId: m.backupId,
      kind: m.kind,
      startTime: m.startTime,
      stopTime: m.stopTime,
      databases: m.objects.flatMap((o) => (o.database ? [o.database] : [])),
      sizeBytes: m.objects.reduce((sum, o) => sum + o.sizeBytes, 0),
      pgVersionNum: m.pgVersionNum,
      ...(m.timeline === undefined ? {} : { timeline: m.timeline, startLsn: m.startLsn, stopLsn: m.stopLsn }),
    }));
    if (values.json) {
      context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return ExitCode.ok;
    }
    if (rows.length === 0) {
      context.stdout.write(`no backups of cluster "${config.cluster}" in ${storage.displayUrl}\n`);
      return ExitCode.ok;
    }
    const table = [
      ['BACKUP', 'KIND', 'FINISHED', 'SIZE', 'DATABASES'],
      ...rows.map((r) => [
        r.backupId,
        r.kind,
        r.stopTime,
        formatBytes(r.sizeBytes),
        r.databases.join(',') || '-',
      ]),
    ];
    const widths = table[0]?.map((_, i) => Math.max(...table.map((row) => row[i]?.length ?? 0))) ?? [];
    for (const row of table) {
      context.stdout.write(
        `${row
          .map((cell, i) => cell.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd()}\n`,
      );
    }
    return ExitCode.ok;
  },
};
