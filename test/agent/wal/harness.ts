/**
 * Shared set-up for tests that archive a real cluster through pgkeep: a work directory the
 * PostgreSQL user owns (archive_command and restore_command run as that user), a file://
 * repository, an identity, a config file, and a way to run the bundled CLI as that user.
 */
import { execFile, spawn } from 'node:child_process';
import { chmod, chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { archiveCommandLine } from '../../../agent/wal/spool.ts';
import { makeServerDir, PG_BIN, type PgCluster } from '../../support/pg-cluster.ts';
import { type CliResult, NODE, outputOf, PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);

export interface Harness {
  readonly dir: string;
  readonly repoDir: string;
  readonly spoolDir: string;
  readonly configPath: string;
  readonly cluster: string;
  readonly user: { uid: number; gid: number } | undefined;
  /** The archive_command line (shell fast path + wal-push). */
  readonly archiveCommand: string;
  /** The same line running another Node binary (e.g. a wrapper that logs each start). */
  archiveCommandWith(nodePath: string): string;
  /** Runs dist/pgkeep.mjs as the server's user with PGKEEP_CONFIG set. */
  pgkeep(args: readonly string[], env?: Record<string, string>, cwd?: string): Promise<CliResult>;
}

export async function serverUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const { stdout: uid } = await execFileAsync('id', ['-u', 'postgres']);
  const { stdout: gid } = await execFileAsync('id', ['-g', 'postgres']);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}

export async function makeHarness(
  cluster: string,
  extraConfig: Record<string, unknown> = {},
  options: { nodePath?: string } = {},
): Promise<Harness> {
  const dir = await makeServerDir('pgkeep-h-');
  const user = await serverUser();
  const repoDir = join(dir, 'repo');
  const spoolDir = join(dir, 'spool');
  await mkdir(repoDir, { mode: 0o700 });
  await mkdir(spoolDir, { mode: 0o700 });
  const identity = await generateX25519Identity();
  const recipient = await identityToRecipient(identity);
  const identityFile = join(dir, 'identity.txt');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
  const configPath = join(dir, 'pgkeep.yaml');
  // No transient pusher (wal.asyncSeconds) unless a test asks for one: a detached process that
  // outlives its test would push into a removed directory and linger after the run.
  const wal = {
    retrySeconds: 5,
    fetchPrefetch: 4,
    asyncSeconds: 0,
    ...((extraConfig.wal as object | undefined) ?? {}),
  };
  const config = {
    cluster,
    repository: `file://${repoDir}`,
    recipients: [recipient],
    identityFile,
    spoolDir,
    pgBin: PG_BIN,
    ...extraConfig,
    wal,
  };
  await writeFile(configPath, JSON.stringify(config, null, 2));
  if (user) for (const p of [repoDir, spoolDir, identityFile, configPath]) await chown(p, user.uid, user.gid);
  await chmod(configPath, 0o600);
  const archiveCommandWith = (nodePath: string) =>
    archiveCommandLine({ nodePath, bundlePath: PGKEEP_BUNDLE, spoolDir, cluster, configPath });
  const archiveCommand = archiveCommandWith(options.nodePath ?? NODE);
  return {
    dir,
    repoDir,
    spoolDir,
    configPath,
    cluster,
    user,
    archiveCommand,
    archiveCommandWith,
    pgkeep: (args, env = {}, cwd = dir) =>
      outputOf(
        spawn(NODE, [PGKEEP_BUNDLE, ...args], {
          ...(user ?? {}),
          cwd,
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PGKEEP_CONFIG: configPath, ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      ),
  };
}

/** postgresql.conf settings that archive through the harness. */
export function archiveSettings(h: Harness): Record<string, string> {
  return { archive_mode: 'on', archive_command: h.archiveCommand, wal_level: 'replica' };
}

/** Switches to a new segment and waits until PostgreSQL reports the finished one archived. */
export async function switchAndWaitArchived(cluster: PgCluster, timeoutMs = 60_000): Promise<string> {
  const name = await cluster.sql('select pg_walfile_name(pg_switch_wal())');
  await waitArchived(cluster, name, timeoutMs);
  return name;
}

export async function waitArchived(cluster: PgCluster, name: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await cluster.sql(
      "select coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') from pg_stat_archiver",
    );
    const [last] = row.split('|');
    if (last !== undefined && last >= name && last.length === name.length) return;
    if (Date.now() > deadline) {
      throw new Error(
        `WAL ${name} not archived within ${timeoutMs} ms (archiver: ${row}):\n${cluster.log().slice(-3000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until a server that is recovering has finished and accepts writes. */
export async function waitPromoted(cluster: PgCluster, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const inRecovery = await cluster.sql('select pg_is_in_recovery()').catch(() => 't');
    if (inRecovery === 'f') return;
    if (Date.now() > deadline)
      throw new Error(`server still in recovery after ${timeoutMs} ms:\n${cluster.log().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export { PG_BIN };

/**
 * A Node "binary" for archive_command/restore_command lines that appends each start's arguments
 * to `log` and then runs Node: the proof that a shell fast path did not start Node. Both files
 * belong to the server's user.
 */
export async function loggedNode(h: Harness, name: string): Promise<{ wrapper: string; log: string }> {
  const log = join(h.dir, `${name}.log`);
  const wrapper = join(h.dir, name);
  await writeFile(wrapper, `#!/bin/sh\necho "$@" >> '${log}'\nexec '${NODE}' "$@"\n`);
  await chmod(wrapper, 0o755);
  await writeFile(log, '');
  if (h.user) {
    await chown(wrapper, h.user.uid, h.user.gid);
    await chown(log, h.user.uid, h.user.gid);
  }
  return { wrapper, log };
}
