/**
 * The `pgkeep` CLI entry: parses the command line, runs one command, maps failures to exit codes.
 * The only place that prints usage or sets the exit code.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { type CommandContext, UsageError } from './commands/command.ts';
import { COMMANDS } from './commands/index.ts';
import { describeExitCodes, ExitCode, type ExitCodeValue, exitCodeFor } from './exit-codes.ts';
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

export { exitCodeFor } from './exit-codes.ts';

export async function main(
  argv: string[],
  io: Pick<CommandContext, 'env' | 'stdout' | 'stderr' | 'interactive'>,
): Promise<ExitCodeValue> {
  let args = argv;
  let configPath: string | undefined;
  while (args[0]?.startsWith('--config')) {
    const [flag, inline] = (args[0] as string).split('=', 2);
    if (flag !== '--config') break;
    configPath = inline ?? args[1];
    args = args.slice(inline === undefined ? 2 : 1);
  }
  const [name, ...rest] = args;
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
  const usageText = command.usageFor?.(rest) ?? command.usage;
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(`usage: ${usageText}\n`);
    return ExitCode.ok;
  }
  try {
    return await command.run({ ...io, args: rest, configPath });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.stderr.write(`pgkeep ${name}: ${message}\n`);
    if (error instanceof UsageError) io.stderr.write(`usage: ${usageText.split('\n')[0]}\n`);
    if (io.env.PGKEEP_DEBUG === '1' && error instanceof Error) io.stderr.write(`${error.stack}\n`);
    return exitCodeFor(error);
  }
}

/** Whether this module is the program itself (`node agent/main.ts`), not imported by tests. */
function isProgram(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === import.meta.url;
  } catch {
    return false;
  }
}

/** Runs the command line of this process; called by agent/entry.ts once the Node version passed. */
export function runProgram(): void {
  main(process.argv.slice(2), {
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    interactive: process.stderr.isTTY === true,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`pgkeep: unexpected failure: ${error instanceof Error ? error.message : error}\n`);
      process.exitCode = ExitCode.failed;
    },
  );
}

if (isProgram()) runProgram();
