/**
 * The `pgkeep` CLI: runs one command of the command line, mapping failures to exit codes
 * (agent/run-command.ts). With agent/wal-push-program.ts, the only place that prints usage or sets
 * the exit code.
 */
import type { CommandLine } from './command-line.ts';
import { COMMANDS } from './commands/index.ts';
import { describeExitCodes, ExitCode, type ExitCodeValue } from './exit-codes.ts';
import { type CommandIo, exitWith, processIo, runCommand } from './run-command.ts';
import { AGENT_VERSION } from './version.ts';

async function usage(): Promise<string> {
  const names = Object.keys(COMMANDS);
  const width = Math.max(...names.map((n) => n.length));
  const summaries = await Promise.all(names.map(async (n) => (await COMMANDS[n]?.())?.summary));
  return `pgkeep ${AGENT_VERSION}: encrypted PostgreSQL backups

usage: pgkeep [--config FILE] COMMAND [options]

commands:
${names.map((n, i) => `  ${n.padEnd(width)}  ${summaries[i]}`).join('\n')}

pgkeep COMMAND --help shows a command's options. Configuration: --config FILE, PGKEEP_CONFIG, or
/etc/pgkeep/pgkeep.yaml, with every option also settable by a PGKEEP_* variable.

exit codes: ${describeExitCodes()}
`;
}

export async function main(line: CommandLine, io: CommandIo): Promise<ExitCodeValue> {
  const [name, ...rest] = line.args;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    io.stdout.write(await usage());
    return name ? ExitCode.ok : ExitCode.usage;
  }
  if (name === 'version' || name === '--version') {
    io.stdout.write(`pgkeep ${AGENT_VERSION}\n`);
    return ExitCode.ok;
  }
  const command = await COMMANDS[name]?.();
  if (!command) {
    io.stderr.write(`pgkeep: unknown command "${name}"; run pgkeep help for the list\n`);
    return ExitCode.usage;
  }
  return runCommand(name, command, rest, line.configPath, io);
}

/** Runs the command line of this process; called by agent/entry.ts once the Node version passed. */
export function runProgram(line: CommandLine): void {
  exitWith(main(line, processIo()));
}
