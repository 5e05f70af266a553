import { ExitCode } from '../exit-codes.ts';
import { runLogicalRestore } from '../logical/restore.ts';
import { readIdentityFile } from '../recipients.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';
import { restorePhysicalCommand } from './restore-physical.ts';
import { setUp } from './setup.ts';

export const restore: Command = {
  summary: 'restore a database from a logical backup',
  usage: `pgkeep restore --db NAME --into TARGET_DB [--backup ID] [--from REPO]

Creates TARGET_DB and streams the dump of NAME into pg_restore in one transaction. If anything
fails, TARGET_DB is dropped again: the restore is complete or absent. Needs the identity file
(identityFile, PGKEEP_IDENTITY).
  --db NAME         the database whose dump to restore
  --into TARGET_DB  a database that does not exist yet
  --backup ID       a backup id from pgkeep list (default: the newest holding NAME)
  --from REPO       read from a target named in the config, or a repository URL (default:
                    repository); a backup the pipeline pruned from ingest is still at the targets

Physical restore with point-in-time recovery: pgkeep restore --pgdata DIR [--target-time T …];
pgkeep restore --pgdata DIR --help lists its options.`,
  usageFor: (args) => (isPhysical(args) ? restorePhysicalCommand.usage : restore.usage),
  async run(context) {
    // Physical restore (point-in-time recovery) shares the command name; --pgdata selects it.
    if (isPhysical(context.args)) {
      return await restorePhysicalCommand.run(context);
    }
    const { values } = parseCommandArgs(context.args, {
      db: { type: 'string' },
      into: { type: 'string' },
      backup: { type: 'string' },
      from: { type: 'string' },
    });
    if (!values.db) throw new UsageError('--db NAME is required: the database whose dump to restore');
    if (!values.into) throw new UsageError('--into TARGET_DB is required: a new database to restore into');
    const { config, storage, pg } = await setUp(context, values.from ? { from: values.from } : {});
    const identities = await readIdentityFile(config.identityFile);
    const result = await runLogicalRestore({
      storage,
      pg,
      cluster: config.cluster,
      identities,
      database: values.db,
      into: values.into,
      backupId: values.backup,
    });
    context.stdout.write(`restored "${values.db}" from backup ${result.backupId} into "${values.into}"\n`);
    return ExitCode.ok;
  },
};

function isPhysical(args: readonly string[]): boolean {
  return args.some((a) => a === '--pgdata' || a.startsWith('--pgdata='));
}
