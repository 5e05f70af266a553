/**
 * The program's first module (dist/pgkeep.mjs): checks the Node version before anything else loads.
 * An old Node fails to link the rest (a node:crypto export it lacks) with an error that names no
 * fix, so the rest is imported only after the check, dynamically.
 *
 * `wal-push`, which PostgreSQL runs once per WAL segment, loads its own bundle (dist/wal-push.mjs,
 * see scripts/build.ts) instead of the CLI's many chunks; every other command loads main.
 */
import { parseCommandLine } from './command-line.ts';
import { nodeVersionProblem } from './node-version.ts';

const problem = nodeVersionProblem(process.versions.node);
if (problem) {
  process.stderr.write(`pgkeep: ${problem}\n`);
  // The configuration exit code: the host is set up wrong, and retrying will not help.
  process.exitCode = 3;
} else {
  const line = parseCommandLine(process.argv.slice(2));
  if (line.args[0] === 'wal-push') {
    const { runWalPushProgram } = await import('./wal-push-program.ts');
    runWalPushProgram(line);
  } else {
    const { runProgram } = await import('./main.ts');
    runProgram(line);
  }
}
