/**
 * `pgkeep wal-push` as a program of its own: dist/wal-push.mjs, which agent/entry.ts loads instead
 * of the whole CLI when the command is wal-push. PostgreSQL starts one per WAL segment, and the
 * CLI's code split by command cost it ~23 files to load; this bundle is one file with what a push
 * needs, plus the few chunks it shares with its rare paths (S3, a configuration not validated yet),
 * which load more only when taken (scripts/build.ts).
 */
import type { CommandLine } from './command-line.ts';
import { walPush } from './commands/wal-push.ts';
import { exitWith, processIo, runCommand } from './run-command.ts';

/** Runs `wal-push ARGS…` (the command line's args after the name) and sets the exit code. */
export function runWalPushProgram(line: CommandLine): void {
  exitWith(runCommand('wal-push', walPush, line.args.slice(1), line.configPath, processIo()));
}
