/**
 * The agent's Node check: the entry names the needed version and the fix on an old Node, before any
 * module that would fail to link loads. The system's own Node (v20 on this Debian) runs the entry.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { MIN_NODE_VERSION, nodeVersionProblem } from '../../agent/node-version.ts';
import { PGKEEP_BUNDLE, PROJECT_ROOT } from '../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);

describe('nodeVersionProblem', () => {
  it('accepts 22.15 and later, refuses older with the version found and the fix', () => {
    for (const ok of ['22.15.0', '22.20.1', '23.0.0', '24.21.0'])
      expect(nodeVersionProblem(ok)).toBeUndefined();
    for (const old of ['22.14.9', '20.19.2', '18.19.0']) {
      const problem = nodeVersionProblem(old);
      expect(problem).toContain(`needs Node >= 22.15, found v${old}; install`);
      expect(problem).toMatch(/tar\.gz or the \.deb/);
    }
  });

  it("is package.json's engines.node", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8'));
    expect(pkg.engines.node).toBe(`>=${MIN_NODE_VERSION}`);
  });
});

describe('the bundled entry on an old Node', () => {
  it("says what it needs and exits 3 under the system's Node 20, for every command", async () => {
    const { stdout: version } = await execFileAsync('/usr/bin/node', ['--version']).catch(() => ({
      stdout: '',
    }));
    expect(
      version,
      '/usr/bin/node (the system Node, v20 on Debian 12 hosts) is needed for this test',
    ).toMatch(/^v(1[0-9]|2[01])\./);
    for (const args of [['--version'], ['wal-push', 'pg_wal/000000010000000000000001']]) {
      const result = await execFileAsync('/usr/bin/node', [PGKEEP_BUNDLE, ...args]).catch(
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
      expect('code' in result ? result.code : 0).toBe(3);
      expect(result.stdout).toBe('');
      expect(result.stderr).toBe(`pgkeep: ${nodeVersionProblem(version.trim().slice(1))}\n`);
    }
  });
});
