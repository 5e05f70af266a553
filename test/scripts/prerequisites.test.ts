/**
 * The check `npm test`, `npm run demo` and `npm run bench` run first. Run as a non-root user with
 * `age` absent from PATH, it must name `age` and the command that installs it, and fail, without
 * trying to install anything.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { installCommand, missingPrerequisites, prerequisiteProblem } from '../../scripts/prerequisites.ts';
import { NODE, PROJECT_ROOT } from '../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);
let bin: string;

beforeAll(async () => {
  // A PATH with what the tests need except age (the PostgreSQL programs are found in PG_BIN).
  bin = await mkdtemp(join(tmpdir(), 'pgkeep-prereq-'));
  await chmod(bin, 0o755);
  for (const program of ['zstd', 'systemd-analyze', 'dpkg-deb']) {
    const { stdout } = await execFileAsync('sh', ['-c', `command -v ${program}`]).catch(() => ({
      stdout: '',
    }));
    expect(
      stdout.trim(),
      `${program} must be installed for this test (npm test's check installs it)`,
    ).not.toBe('');
    await symlink(stdout.trim(), join(bin, program));
  }
});

afterAll(async () => {
  await rm(bin, { recursive: true, force: true });
});

it('names every missing program and the command to install it, and exits non-zero, as a non-root user', async () => {
  // As root the check would install age; as `postgres` (or whoever runs the tests unprivileged) it must not.
  const asUser = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
  const [program = '', ...args] = [
    ...asUser,
    'env',
    `PATH=${bin}`,
    NODE,
    join(PROJECT_ROOT, 'scripts/prerequisites.ts'),
    'test',
  ];
  const result = await execFileAsync(program, args, { cwd: tmpdir() }).catch(
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  expect('code' in result ? result.code : 0).toBe(1);
  expect(result.stderr).toMatch(/^npm test needs programs this machine lacks:\n {2}age: /);
  expect(result.stderr).not.toMatch(/zstd:|initdb:|installing/);
  expect(result.stderr).toContain('install them with: apt-get update && apt-get install -y age');
});

it('asks the benchmarks for pgbackrest, and names each package once', () => {
  // With no PATH, only what is found by absolute path (PG_BIN, /usr/bin/time) is there.
  const bench = missingPrerequisites('bench', { PATH: '/nonexistent' });
  expect(bench.map((p) => p.program)).toEqual(['zstd', 'dpkg-deb', 'pgbackrest']);
  expect(installCommand(bench, 'debian')).toBe(
    'apt-get update && apt-get install -y zstd dpkg pgbackrest   (as root)',
  );
  const test = missingPrerequisites('test', { PATH: '/nonexistent' });
  expect(test.map((p) => p.program)).toEqual([
    'age',
    'zstd',
    'faketime',
    'systemd-analyze',
    'nix-instantiate',
    'dpkg-deb',
  ]);
  expect(installCommand(test, 'rhel')).toMatch(/^dnf install -y age zstd libfaketime systemd nix dpkg /);
});

it('tells a test that needs a missing program why and how to get it', () => {
  expect(prerequisiteProblem('age', { PATH: '/nonexistent' })).toMatch(
    /^age is missing \(the reference age CLI: .*\); install it with: apt-get update && apt-get install -y age/,
  );
  expect(prerequisiteProblem('pg_restore', { PATH: '/nonexistent' })).toBeUndefined();
});
