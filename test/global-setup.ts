// Runs once before any test file: the system programs the tests need must be there (installed or
// named with the fix, before any test starts), and the bundled agent they exec must be current.
import { execFileSync } from 'node:child_process';
import { ensurePrerequisites } from '../scripts/prerequisites.ts';

export default function setup(): void {
  ensurePrerequisites('test');
  if (process.env.PGKEEP_SKIP_BUILD !== '1')
    execFileSync(process.execPath, ['scripts/build.ts'], { stdio: 'inherit' });
}
