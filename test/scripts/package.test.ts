/**
 * The release `npm run build` makes: unpacked into a fresh directory and run with a PATH that holds
 * no Node at all, it reports its version, makes a key, backs up a real database and decrypts what it
 * stored. The .deb holds the same tree under /opt/pgkeep.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AGENT_VERSION } from '../../agent/version.ts';
import { packageAgent, type Release } from '../../scripts/package.ts';
import { PG_BIN, type PgCluster, startCluster } from '../support/pg-cluster.ts';
import { PROJECT_ROOT, runForBytes } from '../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);

let work: string;
let release: Release;
let program: string;
let env: Record<string, string>;
let pg: PgCluster | undefined;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-release-'));
  release = await packageAgent(join(PROJECT_ROOT, 'dist'), join(work, 'out'));
  const installed = join(work, 'installed');
  await mkdir(installed);
  await execFileAsync('tar', ['-C', installed, '-xzf', release.tarball]);
  const [top] = await readdir(installed);
  program = join(installed, top as string, 'bin/pgkeep');
  // The launcher's only needs from PATH: no node, no npm, nothing from this project.
  const bin = join(work, 'bin');
  await mkdir(bin);
  for (const tool of ['readlink', 'dirname']) {
    const { stdout } = await execFileAsync('sh', ['-c', `command -v ${tool}`]);
    await symlink(stdout.trim(), join(bin, tool));
  }
  env = { PATH: bin, HOME: work };
}, 120_000);

afterAll(async () => {
  await pg?.destroy();
  await rm(work, { recursive: true, force: true });
});

it('runs from the unpacked tarball, also through a symlink, with no Node on PATH', async () => {
  await expect(execFileAsync('sh', ['-c', 'command -v node'], { env })).rejects.toThrow();
  const linkDir = join(work, 'usr-bin');
  await mkdir(linkDir);
  await symlink(program, join(linkDir, 'pgkeep'));
  for (const path of [program, join(linkDir, 'pgkeep')]) {
    const result = await runForBytes(path, ['--version'], env);
    expect(result.stderr).toBe('');
    expect(result.stdout.toString()).toBe(`pgkeep ${AGENT_VERSION}\n`);
  }
});

it('makes a key, backs up a real database and decrypts the stored dump, with no Node on PATH', async () => {
  const keyFile = join(work, 'identity.txt');
  const keygen = await runForBytes(program, ['keygen', '--output', keyFile], env);
  expect(keygen.code, keygen.stderr).toBe(0);
  const recipient = keygen.stdout.toString().trim();
  expect(recipient).toMatch(/^age1pq1/);

  pg = await startCluster();
  await pg.sql("create table shipped (note text); insert into shipped values ('from the release')");
  const repo = join(work, 'repo');
  await mkdir(repo);
  const config = join(work, 'pgkeep.yaml');
  await writeFile(config, '# everything from PGKEEP_* variables\n');
  await chmod(config, 0o600);
  const backup = await runForBytes(program, ['backup', '--db', 'postgres'], {
    ...env,
    ...pg.env,
    PGKEEP_CONFIG: config,
    PGKEEP_CLUSTER: 'release',
    PGKEEP_REPOSITORY: `file://${repo}`,
    PGKEEP_RECIPIENTS: recipient,
    PGKEEP_PG_BIN: PG_BIN,
  });
  expect(backup.code, backup.stderr).toBe(0);

  const entries = await readdir(repo, { recursive: true, withFileTypes: true });
  const dump = entries.find((e) => e.isFile() && e.name === 'dump.zst.age');
  expect(dump, 'the backup stored a dump').toBeDefined();
  const plain = await runForBytes(
    program,
    ['decrypt', '-i', keyFile, join(dump?.parentPath ?? '', 'dump.zst.age')],
    env,
  );
  expect(plain.code, plain.stderr).toBe(0);
  expect(plain.stdout.subarray(0, 5).toString()).toBe('PGDMP');
  expect(plain.stdout.includes(Buffer.from('from the release'))).toBe(true);
}, 120_000);

it('the .deb holds the same tree under /opt/pgkeep, with /usr/bin/pgkeep pointing at it', async () => {
  const { stdout: contents } = await execFileAsync('dpkg-deb', ['--contents', release.deb]);
  expect(contents).toMatch(/\.\/opt\/pgkeep\/lib\/node\n/);
  expect(contents).toMatch(/\.\/usr\/bin\/pgkeep -> \/opt\/pgkeep\/bin\/pgkeep\n/);
  const { stdout: fields } = await execFileAsync('dpkg-deb', ['--field', release.deb, 'Package', 'Version']);
  expect(fields).toBe(`Package: pgkeep\nVersion: ${AGENT_VERSION}\n`);
  const root = join(work, 'deb-root');
  await execFileAsync('dpkg-deb', ['-x', release.deb, root]);
  const result = await runForBytes(join(root, 'opt/pgkeep/bin/pgkeep'), ['--version'], env);
  expect(result.stdout.toString()).toBe(`pgkeep ${AGENT_VERSION}\n`);
});
