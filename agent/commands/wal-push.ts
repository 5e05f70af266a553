import { mkdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseWalFileName } from '../../core/wal-names.ts';
import { StorageUnavailableError } from '../../storage/storage.ts';
import { requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { refuseRestoredDataDir } from '../physical/restored-marker.ts';
import { claimPidFile, livePidFileHolder, processAlive } from '../pid-lock.ts';
import {
  backlogWarnBytes,
  measureBacklog,
  mib,
  publishDroppedWal,
  rememberDroppedWal,
} from '../wal/backlog.ts';
import { pushWalFile, sha256OfFile } from '../wal/push.ts';
import { type PushedMarker, WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, type CommandContext, UsageError } from './command.ts';
import { setUp } from './setup.ts';
import { walDataDir, walPushSettings, walRetryPolicy } from './wal-options.ts';

/**
 * When the agent or transient pusher of this data directory has claimed the file (it is pushing
 * it now), pushing it here too would only double the work: waits for its marker while the claim
 * stands and its holder lives, up to `timeoutMs` (the holder's own retry deadline). A file nobody
 * claimed is not waited for at all: the pusher may never push it (a file outside the pg_wal it
 * watches, another data directory, a stuck pusher).
 */
async function waitForClaimedPush(
  spool: WalSpool,
  name: string,
  timeoutMs: number,
): Promise<PushedMarker | undefined> {
  const pid = await livePidFileHolder(spool.agentPidFile);
  if (pid === undefined || !(await spool.claimed(name))) return undefined;
  const deadline = Date.now() + timeoutMs;
  for (let delay = 5; Date.now() < deadline; delay = Math.min(delay * 2, 50)) {
    const marker = await spool.readMarker(name);
    if (marker) return marker;
    // The push ended (the marker is written before the claim is dropped) or its process is gone.
    if (!processAlive(pid) || !(await spool.claimed(name))) return spool.readMarker(name);
    await sleep(delay);
  }
  return undefined;
}

export const walPush: Command = {
  summary: "archive one WAL file (PostgreSQL's archive_command)",
  usage: `pgkeep wal-push PATH

For archive_command = 'pgkeep wal-push %p'. Exits 0 only once the file is durably stored and read
back with its hash checked, or was already stored with identical content (PostgreSQL re-archives
after a crash). The same name with different content, or WAL of another PostgreSQL cluster, exits
non-zero and stores nothing. An unreachable repository is retried for wal.retrySeconds, then the
command fails and PostgreSQL tries again later. When the agent service already pushed the file,
returns at once; when it is pushing it right now, waits for that push; otherwise pushes at once.
Past wal.backlogWarnBytes of ready WAL in pg_wal it warns on stderr; at wal.maxBacklogBytes it keeps
failing (wal.onBacklogFull: fail) or drops the segment, exits 0 and records the gap (drop).
A data directory laid down by \`pgkeep restore --pgdata\` is refused (exit 6) unless its restore
allowed archiving into this cluster: see \`pgkeep promote-archive\`. Never exits above 125
(PostgreSQL would restart its archiver).

Without a running service, after its own push it starts \`pgkeep wal-pusher\` in the background
(like pgBackRest's archive-async), which pushes the following ready segments ahead so that the
next archive_command calls return without starting Node, and exits after wal.asyncSeconds with
nothing to push (PGKEEP_WAL_ASYNC_SECONDS; 0 turns it off).`,
  async run(context) {
    const { positionals } = parseCommandArgs(context.args, {}, 1);
    const path = positionals[0];
    if (!path) throw new UsageError('PATH is required: the WAL file to archive (%p in archive_command)');
    const { config, storage } = await setUp(context);
    const recipients = requireRecipients(config);
    const dataDir = walDataDir(config, context.env, path);
    await refuseRestoredDataDir(dataDir, config.cluster);
    const spool = new WalSpool(config.spoolDir, config.cluster, dataDir);
    await spool.ensureWritable();

    // The service pushed it already (or is pushing it): trust its marker only for these exact
    // bytes and this repository.
    const name = basename(path);
    const marker = await spool.readMarker(name);
    // archive_command's shell line already waited for the agent when it sets PGKEEP_NO_AGENT_WAIT.
    const waited =
      marker ??
      (context.env.PGKEEP_NO_AGENT_WAIT === '1'
        ? undefined
        : await waitForClaimedPush(spool, name, walRetryPolicy(config).deadlineMs));
    if (waited && waited.repository === storage.displayUrl) {
      const { sha256 } = await sha256OfFile(path);
      if (sha256 === waited.plaintextSha256) return ExitCode.ok;
    }

    const { bytes: backlog, level } = await measureBacklog(config.wal, join(dataDir, 'pg_wal'));
    const limit = `wal.maxBacklogBytes (${mib(config.wal.maxBacklogBytes)})`;
    if (level !== 'ok') {
      context.stderr.write(
        `pgkeep wal-push: WARNING: ${mib(backlog)} of WAL waits to be archived in ${join(dataDir, 'pg_wal')} ` +
          `(warning at ${mib(backlogWarnBytes(config.wal) ?? 0)}, limit ${limit}, on full: ${config.wal.onBacklogFull})\n`,
      );
    }
    // Only whole segments are given up: a .history or .partial file is needed to follow a timeline.
    if (
      level === 'full' &&
      config.wal.onBacklogFull === 'drop' &&
      parseWalFileName(name)?.kind === 'segment'
    ) {
      await rememberDroppedWal(spool.root, name, `WAL backlog ${mib(backlog)} reached ${limit}`);
      context.stderr.write(
        `pgkeep wal-push: DROPPED ${name} without archiving it: the WAL backlog ${mib(backlog)} reached ${limit} ` +
          'and wal.onBacklogFull is drop; the gap is recorded in the repository once it answers, and ' +
          'point-in-time recovery across it needs a base backup taken after it\n',
      );
      return ExitCode.ok;
    }

    // A conflict (WalConflictError, ForeignWalError) exits 6 through the entry's table.
    let pushed: Awaited<ReturnType<typeof pushWalFile>>;
    try {
      pushed = await pushWalFile({ ...walPushSettings(config, storage, recipients, spool), path });
    } catch (error) {
      if (level !== 'full' || !(error instanceof StorageUnavailableError)) throw error;
      throw new StorageUnavailableError(
        `${error.message}; the WAL backlog ${mib(backlog)} is at ${limit} and wal.onBacklogFull is fail: ` +
          'archive_command keeps failing and pg_wal keeps growing until the repository answers; bring it back, ' +
          'give pg_wal room, or choose wal.onBacklogFull: drop (docs/physical.md says what each risks)',
        { cause: error },
      );
    }
    // Segments dropped earlier are recorded now that the repository answers; until then they wait.
    await publishDroppedWal(storage, config.cluster, spool.root).catch((error: unknown) => {
      context.stderr.write(
        `pgkeep wal-push: WARNING: dropped WAL is not recorded in the repository yet (${(error as Error).message}); the next push tries again\n`,
      );
    });
    // Only an optimisation for the segments after this one, which is stored: never a failure.
    if (config.wal.asyncSeconds > 0) {
      await startPusher(context, spool, dataDir, path, {
        key: pushed.key,
        plaintextSha256: pushed.plaintextSha256,
        plaintextSizeBytes: pushed.plaintextSizeBytes,
        repository: storage.displayUrl,
        pushedAt: new Date().toISOString(),
      }).catch(() => undefined);
    }
    return ExitCode.ok;
  },
};

/**
 * Starts `pgkeep wal-pusher` detached (PostgreSQL waits for wal-push, not for it) unless a live
 * agent or pusher holds the spool's pid file, then claims the pid file for it at once: the next
 * archive_command, which starts a few milliseconds later, already gives the pusher its grace to
 * claim the segment (wal/spool.ts CLAIM_GRACE_SECONDS) instead of starting Node at once. If the
 * claim of the pid file fails the pusher finds the file taken and exits.
 */
async function startPusher(
  context: CommandContext,
  spool: WalSpool,
  dataDir: string,
  path: string,
  marker: PushedMarker,
): Promise<void> {
  const script = process.argv[1];
  if (!script || (await livePidFileHolder(spool.agentPidFile)) !== undefined) return;
  // The pg_wal of the data directory that keys this spool, so the pusher shares it.
  const walDir = join(dataDir, 'pg_wal');
  const args = [
    script,
    ...(context.configPath ? ['--config', context.configPath] : []),
    'wal-pusher',
    '--pg-wal',
    walDir,
  ];
  await mkdir(spool.root, { recursive: true, mode: 0o700 });
  // Loaded here: child_process is a dozen Node modules a synchronous push never needs.
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore', env: context.env });
  child.on('error', () => {});
  child.unref();
  if (child.pid !== undefined) await claimPidFile(spool.agentPidFile, child.pid);
  // This segment's marker, as the pusher would write it: its first scan then skips the segment
  // (PostgreSQL has not marked it done yet) and starts with the one the archiver needs next. Only
  // for a file PostgreSQL has marked ready, whose bytes cannot change until it is done (wal/spool.ts);
  // the pusher removes the marker once it is.
  const name = basename(path);
  if (dirname(resolve(path)) !== resolve(walDir)) return;
  const ready = await stat(join(walDir, 'archive_status', `${name}.ready`)).then(
    () => true,
    () => false,
  );
  if (ready) await spool.markPushed(name, marker, path);
}
