// Runs once before any test file: integration tests exec the bundled agent, so it must be current.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  if (process.env.PGKEEP_SKIP_BUILD !== '1')
    execFileSync(process.execPath, ['scripts/build.ts'], { stdio: 'inherit' });
}
