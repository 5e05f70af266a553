/**
 * The `pgkeep` CLI entry: parses the command line, runs one command, maps failures to exit codes.
 * The only place that prints usage or sets the exit code.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { type CommandContext, UsageError } from './commands/command.ts';
import { COMMANDS } from './commands/index.ts';
import { ExitCode } from './exit-codes.ts';
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

exit codes: 0 ok, 1 failed, 2 usage, 3 configuration, 4 repository unreachable,
            5 object failed verification, 6 WAL conflict, 7 a verification check failed
`;
}

/**
 * Exit code by error class name. Matching names rather than classes keeps this entry from importing
 * (and so evaluating at every start) the modules that define them.
 */
const EXIT_CODE_BY_ERROR: Readonly<Record<string, number>> = {
  UsageError: ExitCode.usage,
  ConfigError: ExitCode.config,
  InvalidStorageUrlError: ExitCode.config,
  StorageUnavailableError: ExitCode.unavailable,
  ObjectIntegrityError: ExitCode.integrity,
  AgeDecryptError: ExitCode.integrity,
  InvalidManifestError: ExitCode.integrity,
};

export function exitCodeFor(error: unknown): number {
  const name = error instanceof Error ? error.name : '';
  return EXIT_CODE_BY_ERROR[name] ?? ExitCode.failed;
}

export async function main(
  argv: string[],
  io: Pick<CommandContext, 'env' | 'stdout' | 'stderr' | 'interactive'>,
) {
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
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(`usage: ${command.usage}\n`);
    return ExitCode.ok;
  }
  try {
    return await command.run({ ...io, args: rest, configPath });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.stderr.write(`pgkeep ${name}: ${message}\n`);
    if (error instanceof UsageError) io.stderr.write(`usage: ${command.usage.split('\n')[0]}\n`);
    if (io.env.PGKEEP_DEBUG === '1' && error instanceof Error) io.stderr.write(`${error.stack}\n`);
    return exitCodeFor(error);
  }
}

/** Whether this module is the program itself (the bundle, a symlink to it, or `node agent/main.ts`). */
function isProgram(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === import.meta.url;
  } catch {
    return false;
  }
}

// Run only as the program, not when imported by tests.
if (isProgram()) {
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
