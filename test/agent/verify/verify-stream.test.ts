/**
 * `pgkeep verify` on stream backups (`pgkeep stream backup`): checked against the manifest and
 * decrypted, and restored into the configured restore command when there is one; a flipped byte
 * fails as an object (exit 5), a failing restore command as a check (exit 7).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referenceKeyPairs } from '../../support/age-keys.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);
const PRODUCER = 'seq 1 300000';
let work: string;
let identityFile: string;
let recipient: string;

function env(repo: string, config: string): Record<string, string> {
  return {
    PGKEEP_CONFIG: config,
    PGKEEP_CLUSTER: 'nixhost',
    PGKEEP_REPOSITORY: `file://${repo}`,
    PGKEEP_RECIPIENTS: recipient,
    PGKEEP_IDENTITY: identityFile,
    PGKEEP_SPOOL_DIR: join(work, 'spool'),
  };
}

async function repoWithBackup(name: string): Promise<string> {
  const repo = join(work, name);
  await mkdir(repo);
  const taken = await runPgkeep(
    ['stream', 'backup', '--name', 'app', '--', 'sh', '-c', PRODUCER],
    env(repo, join(work, 'plain.yaml')),
  );
  expect(taken.code, taken.stderr).toBe(0);
  return repo;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-verify-stream-'));
  const { hybrid } = await referenceKeyPairs();
  recipient = hybrid.recipient;
  identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${hybrid.identity}\n`, { mode: 0o600 });
  await writeFile(join(work, 'plain.yaml'), '{}\n');
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('pgkeep verify on stream backups', () => {
  it('checks and decrypts the newest stream, and restores it into the configured command', async () => {
    const repo = await repoWithBackup('ok');
    const checked = await runPgkeep(
      ['verify', '--stream', 'app', '--json'],
      env(repo, join(work, 'plain.yaml')),
    );
    expect(checked.code, checked.stderr).toBe(0);
    const report = JSON.parse(checked.stdout);
    expect(report).toMatchObject({ mode: 'stream', passed: true, exitCode: 0 });
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual(['objects']);

    const out = join(work, 'restored.sha256');
    const config = join(work, 'with-restore.yaml');
    await writeFile(config, `verify:\n  streams:\n    app:\n      restoreCommand: "sha256sum > ${out}"\n`);
    const restored = await runPgkeep(['verify', '--stream', 'app', '--json'], env(repo, config));
    expect(restored.code, restored.stderr).toBe(0);
    expect(JSON.parse(restored.stdout).checks.map((c: { name: string }) => c.name)).toEqual([
      'objects',
      'restore',
    ]);
    const { stdout } = await execFileAsync('sh', ['-c', `${PRODUCER} | sha256sum`]);
    expect(await readFile(out, 'utf8')).toBe(stdout);
    // --backup of a stream backup takes the same path.
    const byId = await runPgkeep(['verify', '--backup', report.backupId, '--json'], env(repo, config));
    expect(JSON.parse(byId.stdout)).toMatchObject({
      mode: 'stream',
      passed: true,
      backupId: report.backupId,
    });
  });

  it('fails a flipped byte as a damaged object (5) and a failing restore command as a check (7)', async () => {
    const repo = await repoWithBackup('bad');
    const failing = join(work, 'failing.yaml');
    await writeFile(
      failing,
      'verify:\n  streams:\n    app:\n      restoreCommand: "head -c 10 >/dev/null; exit 9"\n',
    );
    const refused = await runPgkeep(['verify', '--stream', 'app'], env(repo, failing));
    expect(refused.code).toBe(7);
    expect(refused.stderr).toContain('exited with code 9');

    const entries = await readdir(repo, { recursive: true, withFileTypes: true });
    const object = entries.find((e) => e.isFile() && e.name === 'stream.zst.age');
    if (!object) throw new Error('no stream object stored');
    const path = join(object.parentPath, object.name);
    const bytes = await readFile(path);
    bytes[bytes.length - 50] = (bytes[bytes.length - 50] ?? 0) ^ 1;
    await writeFile(path, bytes);
    const damaged = await runPgkeep(['verify', '--stream', 'app'], env(repo, join(work, 'plain.yaml')));
    expect(damaged.code).toBe(5);
    expect(damaged.stderr).toMatch(/objects: object v1\/nixhost\/stream\/app\/.*failed verification/);
  });
});
