/**
 * The program's first module (dist/pgkeep.mjs): checks the Node version before anything else loads.
 * An old Node fails to link the rest (a node:crypto export it lacks) with an error that names no
 * fix, so the rest is imported only after the check, dynamically.
 */
import { nodeVersionProblem } from './node-version.ts';

const problem = nodeVersionProblem(process.versions.node);
if (problem) {
  process.stderr.write(`pgkeep: ${problem}\n`);
  // The configuration exit code: the host is set up wrong, and retrying will not help.
  process.exitCode = 3;
} else {
  const { runProgram } = await import('./main.ts');
  runProgram();
}
