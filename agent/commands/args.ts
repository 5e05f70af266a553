import type { ParseArgsConfig } from 'node:util';
import { UsageError } from './command.ts';

// Not `import { parseArgs } from 'node:util'`: node:util's ES module namespace reads every lazy part
// of util, ~30 internal modules and several ms of CPU at each start of the CLI (once per WAL
// segment for wal-push); the CommonJS object loads only what is used.
const { parseArgs } = process.getBuiltinModule('node:util');

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs with unknown options and stray arguments reported as usage errors. */
export function parseCommandArgs<T extends Options>(args: string[], options: T, positionals = 0) {
  try {
    const parsed = parseArgs({ args, options, allowPositionals: positionals > 0, strict: true });
    if (parsed.positionals.length > positionals) {
      throw new UsageError(`unexpected argument "${parsed.positionals[positionals]}"`);
    }
    return parsed;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message);
  }
}
