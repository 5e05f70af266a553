/**
 * Runs one command as the CLI does: its `--help`, its failures printed and mapped to exit codes
 * (agent/exit-codes.ts), and the process's exit code set from the result. Shared by the whole CLI
 * (agent/main.ts) and the WAL push program (agent/wal-push-program.ts), which is bundled on its own
 * so that archive_command loads a few files, not the CLI's ~24. Failures are told apart by their
 * name (exit-codes.ts), never by `instanceof`: each bundle carries its own copy of the classes.
 */
import type { Command, CommandContext } from './commands/command.ts';
import { ExitCode, type ExitCodeValue, exitCodeFor } from './exit-codes.ts';

export type CommandIo = Pick<CommandContext, 'env' | 'stdout' | 'stderr' | 'interactive'>;

export async function runCommand(
  name: string,
  command: Command,
  args: string[],
  configPath: string | undefined,
  io: CommandIo,
): Promise<ExitCodeValue> {
  const usageText = command.usageFor?.(args) ?? command.usage;
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout.write(`usage: ${usageText}\n`);
    return ExitCode.ok;
  }
  try {
    // Not spread: that would read io's getters (processIo) now.
    const context = Object.defineProperties({ args, configPath }, Object.getOwnPropertyDescriptors(io));
    return await command.run(context as CommandContext);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const code = exitCodeFor(error);
    io.stderr.write(`pgkeep ${name}: ${message}\n`);
    if (code === ExitCode.usage) io.stderr.write(`usage: ${usageText.split('\n')[0]}\n`);
    if (io.env.PGKEEP_DEBUG === '1' && error instanceof Error) io.stderr.write(`${error.stack}\n`);
    return code;
  }
}

/**
 * This process's standard streams and environment. The streams are getters: Node builds each on
 * first use (for a pipe, as archive_command's stderr usually is, loading node:net), and a
 * successful push writes nothing.
 */
export function processIo(): CommandIo {
  return {
    env: process.env,
    get stdout() {
      return process.stdout;
    },
    get stderr() {
      return process.stderr;
    },
    get interactive() {
      return process.stderr.isTTY === true;
    },
  };
}

/** Sets the process's exit code from `result`; a failure that escaped the command is `failed`. */
export function exitWith(result: Promise<ExitCodeValue>): void {
  result.then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`pgkeep: unexpected failure: ${error instanceof Error ? error.message : error}\n`);
      process.exitCode = ExitCode.failed;
    },
  );
}
