/**
 * `npm run demo` is what a newcomer runs first; this keeps it working. It runs the demo as a user
 * would and checks it reached its end: backups stored, replicated to both providers, retention
 * applied, and pgkeep verify (logical and PITR) passing on a provider's copy.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { NODE, PROJECT_ROOT } from '../support/pgkeep-cli.ts';

it('runs the whole pipeline end to end', async () => {
  const child = spawn(NODE, [join(PROJECT_ROOT, 'demo/run.ts')], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  expect(code, output.slice(-4000)).toBe(0);
  expect(output).toMatch(/"anyFailed": false/);
  expect(output).toMatch(/"objectsSkipped": \d+/);
  expect(output).toMatch(/"expired": 1/);
  expect(output).toMatch(/verify backup \S+ \(logical\) from b2: PASSED/);
  expect(output).toMatch(/ok\s+assertion:every-customer/);
  expect(output).toMatch(/"mode": "pitr",\s+"source": "b2",[\s\S]*?"passed": true,\s+"exitCode": 0/);
  expect(output).toMatch(/== Done:/);
}, 300_000);
