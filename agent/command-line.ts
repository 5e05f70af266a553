/**
 * The command line's global part: `[--config FILE] COMMAND ARGS…`. Parsed once, by the program's
 * first module (agent/entry.ts), which needs the command's name to choose what to load.
 */
export interface CommandLine {
  /** `--config FILE` or `--config=FILE` before the command name, if any. */
  readonly configPath: string | undefined;
  /** The command's name, then its own arguments. */
  readonly args: readonly string[];
}

export function parseCommandLine(argv: readonly string[]): CommandLine {
  let args = argv;
  let configPath: string | undefined;
  while (args[0]?.startsWith('--config')) {
    const [flag, inline] = (args[0] as string).split('=', 2);
    if (flag !== '--config') break;
    configPath = inline ?? args[1];
    args = args.slice(inline === undefined ? 2 : 1);
  }
  return { configPath, args };
}
