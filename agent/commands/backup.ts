import { requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { runLogicalBackup } from '../logical/backup.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';
import { formatBytes, progressLine, setUp } from './setup.ts';

export const backup: Command = {
  summary: 'take a logical backup (pg_dump) of some or all databases',
  usage: `pgkeep backup (--db NAME [--db NAME…] | --all) [--json]

Streams pg_dump -Fc of each database and one pg_dumpall --globals-only, compressed and encrypted,
into the repository, then writes the manifest. The backup exists only once the manifest does.
  --db NAME   a database to dump (repeatable)
  --all       every database that allows connections
  --json      print the manifest as JSON on success`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      db: { type: 'string', multiple: true },
      all: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    });
    const databases = values.db ?? [];
    if (values.all === databases.length > 0)
      throw new UsageError('name databases with --db NAME, or use --all (one or the other)');
    const { config, storage, pg } = await setUp(context);
    const recipients = requireRecipients(config);
    const progress = progressLine(context);
    const manifest = await runLogicalBackup({
      storage,
      pg,
      cluster: config.cluster,
      recipients,
      databases: values.all ? 'all' : databases,
      zstdLevel: config.zstdLevel,
      parallelism: config.backup.parallelism,
      onEvent: (event) => {
        if (event.type === 'progress')
          progress.update(`${event.what}: ${formatBytes(event.storedBytes)} stored`);
      },
    });
    progress.done();
    if (values.json) {
      context.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
    } else {
      const total = manifest.objects.reduce((sum, o) => sum + o.sizeBytes, 0);
      const plain = manifest.objects.reduce((sum, o) => sum + o.plaintextSizeBytes, 0);
      context.stdout.write(
        `backup ${manifest.backupId}: ${manifest.objects.length} objects, ${formatBytes(plain)} dumped, ${formatBytes(total)} stored\n`,
      );
    }
    return ExitCode.ok;
  },
};
