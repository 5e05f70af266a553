/**
 * The README's "Installing the agent", followed literally as an operator would, with the release
 * `npm run build` makes and a PATH that holds no Node at all (not even for PostgreSQL's
 * archive_command): make a key, write the config, paste the printed archive_command line, take a
 * base backup, restore to a point in time into a second directory and start it there, and find
 * production's archive untouched by that test copy.
 */
import { execFile, spawn } from 'node:child_process';
import { appendFile, chown, mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { packageAgent } from '../../scripts/package.ts';
import { serverUser, switchAndWaitArchived, waitPromoted } from '../agent/wal/harness.ts';
import {
  makeServerDir,
  PG_BIN,
  type PgCluster,
  startCluster,
  startExistingCluster,
} from '../support/pg-cluster.ts';
import { PROJECT_ROOT } from '../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);
const NODE_PROGRAMS = new Set(['node', 'nodejs', 'npm', 'npx', 'corepack']);

let work: string;
let program: string;
let bin: string;
let config: string;
let user: { uid: number; gid: number } | undefined;
const clusters: PgCluster[] = [];

/** Every program of /usr/bin and /bin but Node's: the PATH of a host that never installed Node. */
async function pathWithoutNode(dir: string): Promise<string> {
  await mkdir(dir);
  for (const from of ['/usr/bin', '/bin']) {
    for (const name of await readdir(from)) {
      if (NODE_PROGRAMS.has(name)) continue;
      await symlink(join(from, name), join(dir, name)).catch(() => {});
    }
  }
  return dir;
}

/** Runs the installed `pgkeep` as the PostgreSQL user, as the README's steps do. */
async function pgkeep(args: readonly string[], env: Record<string, string> = {}) {
  const child = spawn(program, args, {
    env: { PATH: bin, HOME: work, PGKEEP_CONFIG: config, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  return { code, stdout, stderr };
}

beforeAll(async () => {
  work = await makeServerDir('pgkeep-walkthrough-');
  user = await serverUser();
  const release = await packageAgent(join(PROJECT_ROOT, 'dist'), join(work, 'out'));
  const installed = join(work, 'opt');
  await mkdir(installed);
  await execFileAsync('tar', ['-C', installed, '-xzf', release.tarball]);
  const [top] = await readdir(installed);
  program = join(installed, top as string, 'bin/pgkeep');
  bin = await pathWithoutNode(join(work, 'bin'));
  await expect(execFileAsync('sh', ['-c', 'command -v node'], { env: { PATH: bin } })).rejects.toThrow();
}, 180_000);

afterAll(async () => {
  for (const cluster of clusters) await cluster.destroy().catch(() => {});
  await rm(work, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
});

it('installs, archives, takes a base backup and restores to a point in time without Node on PATH, leaving production archive untouched', async () => {
  // Step 1: a key pair.
  const identity = join(work, 'pgkeep-identity.txt');
  const keygen = await pgkeep(['keygen', '--output', identity]);
  expect(keygen.code, keygen.stderr).toBe(0);
  const recipient = keygen.stdout.trim();
  expect(recipient).toMatch(/^age1pq1/);

  // Step 2: the config file, and the spool the README says to create for postgres.
  const repo = join(work, 'repo');
  const spool = join(work, 'pgkeep-state', 'spool');
  for (const dir of [repo, join(work, 'pgkeep-state'), spool]) {
    await mkdir(dir, { mode: 0o700 });
    if (user) await chown(dir, user.uid, user.gid);
  }
  config = join(work, 'pgkeep.yaml');
  await writeFile(
    config,
    [
      'cluster: walkthrough',
      `repository: file://${repo}`,
      `recipients: [${recipient}]`,
      `identityFile: ${identity}`,
      `spoolDir: ${spool}`,
      `pgBin: ${PG_BIN}`,
      '',
    ].join('\n'),
  );
  if (user) await chown(config, user.uid, user.gid);

  // Step 4: archive_command as printed, pasted into postgresql.conf.
  const production = await startCluster({
    settings: { archive_mode: 'on', wal_level: 'replica' },
    serverEnv: { PATH: bin },
  });
  clusters.push(production);
  const printed = await pgkeep(['systemd-unit', '--archive-command']);
  expect(printed.code, printed.stderr).toBe(0);
  expect(printed.stdout).toMatch(/^archive_command = '.*wal-push.*'\n$/);
  await appendFile(join(production.dataDir, 'postgresql.conf'), printed.stdout);
  await production.sql('select pg_reload_conf()');
  const check = await pgkeep(['check'], production.env);
  expect(check.code, `${check.stdout}${check.stderr}`).toBe(0);

  await production.sql('create table t (v text)');
  await production.sql("insert into t values ('before-backup')");
  const base = await pgkeep(['basebackup'], production.env);
  expect(base.code, base.stderr).toBe(0);
  await production.sql("insert into t values ('at-T')");
  await switchAndWaitArchived(production);
  const timeT = await production.sql('select clock_timestamp()');
  await new Promise((r) => setTimeout(r, 300));
  await production.sql("insert into t values ('after-T')");
  await switchAndWaitArchived(production);

  // Point-in-time recovery into a second directory, started on its own port.
  const copyDir = join(work, 'restored', 'data');
  await mkdir(join(work, 'restored'), { mode: 0o700 });
  if (user) await chown(join(work, 'restored'), user.uid, user.gid);
  const restored = await pgkeep(['restore', '--pgdata', copyDir, '--target-time', timeT]);
  expect(restored.code, restored.stderr).toBe(0);
  const copy = await startExistingCluster(copyDir, { serverEnv: { PATH: bin } });
  clusters.push(copy);
  await waitPromoted(copy);
  expect(await copy.sql("select string_agg(v, ',' order by v) from t")).toBe('at-T,before-backup');
  await copy.sql("insert into t values ('written-on-the-copy')");
  await copy.sql('select pg_switch_wal()');
  await copy.sql('checkpoint');

  // Production goes on archiving; the copy added nothing to its archive.
  await production.sql("insert into t values ('after-copy')");
  await switchAndWaitArchived(production);
  expect(await readdir(join(repo, 'v1', 'walkthrough', 'wal'))).toEqual(['00000001']);
}, 300_000);
