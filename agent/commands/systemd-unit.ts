import { resolve } from 'node:path';
import { ExitCode } from '../exit-codes.ts';
import { renderAgentUnit } from '../systemd/unit.ts';
import { archiveCommandLine, postgresqlConfString, restoreCommandLine } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';

export const systemdUnit: Command = {
  summary: 'print the systemd unit of the agent (and the archive_command/restore_command lines)',
  usage: `pgkeep systemd-unit [--user postgres] [--pgdata DIR] [--config FILE] [--aws-credentials FILE]
                    [--writable DIR…] [--cluster NAME] [--spool-dir DIR] [--archive-command | --restore-command]

Prints a hardened unit for \`pgkeep agent\` that runs this Node.js binary and this pgkeep file,
for /etc/systemd/system/pgkeep-agent.service. With --archive-command (or --restore-command) prints
instead the postgresql.conf line that calls pgkeep from the same paths; the archive_command line
returns at once, without starting Node, for a WAL file the agent has already pushed.
  --user USER             the PostgreSQL user the agent runs as (default postgres)
  --pgdata DIR            the data directory (its pg_wal is watched)
  --config FILE           the config file (default /etc/pgkeep/pgkeep.yaml)
  --aws-credentials FILE  AWS shared credentials, passed with LoadCredential=
  --writable DIR          another directory the agent may write, e.g. a file:// repository
  --cluster NAME, --spool-dir DIR   for the command lines (defaults: config values)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      user: { type: 'string' },
      pgdata: { type: 'string' },
      config: { type: 'string' },
      'aws-credentials': { type: 'string' },
      writable: { type: 'string', multiple: true },
      cluster: { type: 'string' },
      'spool-dir': { type: 'string' },
      'archive-command': { type: 'boolean', default: false },
      'restore-command': { type: 'boolean', default: false },
    });
    const script = process.argv[1];
    if (!script) throw new Error('cannot tell where pgkeep is installed');
    const bundlePath = resolve(script);
    const configPath =
      values.config ?? context.configPath ?? context.env.PGKEEP_CONFIG ?? '/etc/pgkeep/pgkeep.yaml';
    if (values['archive-command'] || values['restore-command']) {
      const cluster = values.cluster ?? context.env.PGKEEP_CLUSTER;
      if (!cluster)
        throw new UsageError("--cluster NAME is required for the command lines (the config's cluster)");
      const line = {
        nodePath: process.execPath,
        bundlePath,
        spoolDir: values['spool-dir'] ?? '/var/lib/pgkeep/spool',
        cluster,
        configPath: resolve(configPath),
      };
      const [name, value] = values['archive-command']
        ? ['archive_command', archiveCommandLine(line)]
        : ['restore_command', restoreCommandLine(line)];
      context.stdout.write(`${name} = ${postgresqlConfString(value)}\n`);
      return ExitCode.ok;
    }
    context.stdout.write(
      renderAgentUnit({
        nodePath: process.execPath,
        bundlePath,
        configPath: resolve(configPath),
        ...(values.user ? { user: values.user } : {}),
        ...(values.pgdata ? { pgData: resolve(values.pgdata) } : {}),
        ...(values['spool-dir'] ? { spoolDir: values['spool-dir'] } : {}),
        ...(values['aws-credentials'] ? { awsCredentialsFile: resolve(values['aws-credentials']) } : {}),
        ...(values.writable ? { writablePaths: values.writable.map((p) => resolve(p)) } : {}),
      }),
    );
    return ExitCode.ok;
  },
};
