import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  type AgentConfig,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  DEFAULT_SPOOL_DIR,
  loadConfig,
} from '../config.ts';
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
  --pgdata DIR            the data directory (its pg_wal is watched; default $PGDATA; required
                          unless the config sets wal.pgWalDir)
  --config FILE           the config file (default /etc/pgkeep/pgkeep.yaml)
  --aws-credentials FILE  AWS shared credentials, passed with LoadCredential=
  --writable DIR          another directory the agent may write, e.g. a file:// repository or a
                          spoolDir outside /var/lib/pgkeep
  --cluster NAME, --spool-dir DIR   override the config's cluster and spoolDir`,
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
      values.config ?? context.configPath ?? context.env.PGKEEP_CONFIG ?? DEFAULT_CONFIG_PATH;
    // The cluster, the spool and pg_wal come from the same configuration wal-push and the agent
    // read, so the printed lines cannot disagree with it; flags only override.
    let config: AgentConfig | undefined;
    let configError: Error | undefined;
    try {
      config = await loadConfig({ configPath, env: context.env });
    } catch (error) {
      // Only an absent file may be made up for by flags; a broken one would print wrong paths.
      if (existsSync(configPath)) throw error;
      configError = error as Error;
    }
    const spoolDir = values['spool-dir'] ?? config?.spoolDir ?? DEFAULT_SPOOL_DIR;
    if (values['archive-command'] || values['restore-command']) {
      const cluster = values.cluster ?? config?.cluster;
      if (!cluster) {
        throw new UsageError(
          `the command lines need the cluster name, from the config or --cluster NAME; the config gave none: ${configError?.message}`,
        );
      }
      const line = {
        nodePath: process.execPath,
        bundlePath,
        spoolDir,
        cluster,
        configPath: resolve(configPath),
      };
      const [name, value] = values['archive-command']
        ? ['archive_command', archiveCommandLine(line)]
        : ['restore_command', restoreCommandLine(line)];
      context.stdout.write(`${name} = ${postgresqlConfString(value)}\n`);
      return ExitCode.ok;
    }
    const pgData = values.pgdata ?? context.env.PGDATA;
    if (pgData === undefined && config?.wal.pgWalDir === undefined) {
      throw new UsageError(
        '--pgdata DIR is required: the data directory whose pg_wal the agent watches (or set wal.pgWalDir in the config)',
      );
    }
    if (pgData !== undefined) await assertDataDirectory(resolve(pgData));
    context.stdout.write(
      renderAgentUnit({
        nodePath: process.execPath,
        bundlePath,
        configPath: resolve(configPath),
        ...(values.user ? { user: values.user } : {}),
        ...(pgData ? { pgData: resolve(pgData) } : {}),
        spoolDir,
        ...(values['aws-credentials'] ? { awsCredentialsFile: resolve(values['aws-credentials']) } : {}),
        ...(values.writable ? { writablePaths: values.writable.map((p) => resolve(p)) } : {}),
      }),
    );
    return ExitCode.ok;
  },
};

/** A unit for a data directory that does not exist would start an agent that watches nothing. */
async function assertDataDirectory(dir: string): Promise<void> {
  const found = await stat(join(dir, 'PG_VERSION')).then(
    () => true,
    (error: NodeJS.ErrnoException) => error.code === 'EACCES',
  );
  if (!found) {
    throw new ConfigError(
      `--pgdata ${dir} is not a PostgreSQL data directory (no PG_VERSION in it): give the directory initdb made, e.g. /var/lib/postgresql/15/main`,
    );
  }
}
