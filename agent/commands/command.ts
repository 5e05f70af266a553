import type { Writable } from 'node:stream';
import type { ExitCodeValue } from '../exit-codes.ts';

/** What a command gets from the CLI entry. Commands never exit the process themselves. */
export interface CommandContext {
  /** The arguments after the command name. */
  readonly args: string[];
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** `--config` given before the command name, if any. */
  readonly configPath: string | undefined;
  /** True when a person is watching stderr: progress is drawn there. */
  readonly interactive: boolean;
}

export interface Command {
  readonly summary: string;
  readonly usage: string;
  /** The usage for these arguments, when one command name has several forms (restore). */
  usageFor?(args: readonly string[]): string;
  /** Resolves to the exit code; throws for failures the entry maps to exit codes. */
  run(context: CommandContext): Promise<ExitCodeValue>;
}

/** Wrong arguments; the entry prints the message and the command's usage. */
export class UsageError extends Error {
  override name = 'UsageError';
}
