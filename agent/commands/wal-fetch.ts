import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { parseWalFileName } from '../../core/wal-names.ts';
import { ExitCode, type ExitCodeValue } from '../exit-codes.ts';
import { parsePidText } from '../pid-lock.ts';
import { readIdentityFile } from '../recipients.ts';
import { fetchWalFile } from '../wal/fetch.ts';
import {
  notePrefetchWanted,
  postmasterPid,
  prefetchAhead,
  prefetcherRunning,
  reservePrefetch,
  serverStillRecovering,
  takePrefetched,
} from '../wal/prefetch.ts';
import { WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, type CommandContext, UsageError } from './command.ts';
import { setUp } from './setup.ts';
import { walDataDir, walRetryPolicy } from './wal-options.ts';

/**
 * PostgreSQL aborts recovery when restore_command exits above 125; any lower code means "no such
 * file", which in archive recovery ends recovery and promotes. A repository that stays unreachable,
 * or an object that fails verification, must not end recovery early and lose the WAL after it.
 */
export const EXIT_ABORT_RECOVERY = ExitCode.abortRecovery;

/** What the prefetcher may read ahead of the segment it fetches, from one WAL bundle at a time. */
const PREFETCH_READ_AHEAD_BYTES = 64 * 1024 * 1024;

export const walFetch: Command = {
  summary: "restore one WAL file (PostgreSQL's restore_command)",
  usage: `pgkeep wal-fetch NAME PATH

For restore_command = 'pgkeep wal-fetch %f %p'. Writes WAL file NAME to PATH atomically and exits 0;
exits 1 at once when the repository holds no such file (.history files included), which tells
PostgreSQL it reached the end of the archive. An unreachable repository is retried for
wal.retrySeconds; if it stays unreachable, or the object fails verification, the command exits
${EXIT_ABORT_RECOVERY} during archive recovery (PostgreSQL stops instead of ending recovery early and losing
the WAL it could not read); on a standby (PostgreSQL retries) it exits with pgkeep's usual code,
4 or 5. For a segment, a background prefetcher keeps the following wal.fetchPrefetch segments downloaded ahead.`,
  async run(context) {
    const { positionals } = parseCommandArgs(context.args, {}, 2);
    const [name, path] = positionals;
    if (!name || !path) throw new UsageError('NAME and PATH are required (%f and %p in restore_command)');
    if (!parseWalFileName(name)) throw new UsageError(`"${name}" is not a WAL file name`);
    try {
      return await fetchOne(context, name, path);
    } catch (error) {
      // restore_command runs in the data directory; a standby has standby.signal there. A standby
      // retries on any failure, so its code is the entry's usual mapping.
      const standby = await access('standby.signal').then(
        () => true,
        () => false,
      );
      if (standby) throw error;
      context.stderr.write(`pgkeep wal-fetch: ${(error as Error).message}\n`);
      return EXIT_ABORT_RECOVERY;
    }
  },
};

async function fetchOne(context: CommandContext, name: string, path: string): Promise<ExitCodeValue> {
  const { config, storage } = await setUp(context, { readsWal: true });
  const dataDir = walDataDir(config, context.env, path);
  const spool = new WalSpool(config.spoolDir, config.cluster, dataDir);
  const prefetch = parseWalFileName(name)?.kind === 'segment' && config.wal.fetchPrefetch > 0;
  const startPrefetch = async () => {
    if (prefetch)
      await startPrefetcher(context, spool, dataDir, name, config.wal.fetchPrefetch).catch(() => undefined);
  };
  if (prefetch) await notePrefetchWanted(spool, name).catch(() => undefined);
  if (parseWalFileName(name)?.kind === 'segment' && (await takePrefetched(spool, name, path))) {
    await startPrefetch();
    return ExitCode.ok;
  }
  const identities = await readIdentityFile(config.identityFile);
  const outcome = await fetchWalFile({
    storage,
    cluster: config.cluster,
    identities,
    walFileName: name,
    destination: path,
    retry: walRetryPolicy(config),
    // Started before this download rather than after it, so its start overlaps the download and
    // restore_command's shell line waits for it for the next segment instead of starting Node;
    // not for a segment the repository does not hold (a standby asks again every few seconds).
    onFound: startPrefetch,
  });
  return outcome === 'missing' ? ExitCode.failed : ExitCode.ok;
}

/**
 * Starts `pgkeep wal-prefetch NAME` detached (PostgreSQL waits for wal-fetch, not for it) unless a
 * prefetcher is running already (it follows the segment just noted as wanted), and reserves the
 * next segments in its name.
 */
async function startPrefetcher(
  context: CommandContext,
  spool: WalSpool,
  dataDir: string,
  after: string,
  count: number,
): Promise<void> {
  const script = process.argv[1];
  if (!script || (await prefetcherRunning(spool))) return;
  const postmaster = await postmasterPid(dataDir);
  const args = [
    script,
    ...(context.configPath ? ['--config', context.configPath] : []),
    'wal-prefetch',
    '--pgdata',
    dataDir,
    ...(postmaster !== undefined ? ['--postmaster', String(postmaster)] : []),
    after,
  ];
  const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore', env: context.env });
  child.on('error', () => {});
  child.unref();
  if (child.pid !== undefined) await reservePrefetch(spool, child.pid, after, count);
}

export const walPrefetch: Command = {
  summary: 'download the WAL segments after NAME into the spool (started by wal-fetch)',
  usage: `pgkeep wal-prefetch [--pgdata DIR] [--postmaster PID] NAME

Downloads the wal.fetchPrefetch segments after NAME that are not in the spool yet, stopping at the
end of the archive, and at once when the server recovering DIR stops or leaves recovery.
wal-fetch starts it in the background; one runs per data directory at a time.
  --pgdata DIR       the data directory being recovered (default: as wal-fetch finds it)
  --postmaster PID   the server's postmaster, as wal-fetch saw it (default: DIR/postmaster.pid's)`,
  async run(context) {
    const { positionals, values } = parseCommandArgs(
      context.args,
      { pgdata: { type: 'string' }, postmaster: { type: 'string' } },
      1,
    );
    const name = positionals[0];
    if (!name || parseWalFileName(name)?.kind !== 'segment')
      throw new UsageError('NAME must be a WAL segment name');
    const postmaster = values.postmaster === undefined ? undefined : parsePidText(values.postmaster);
    if (values.postmaster !== undefined && postmaster === undefined)
      throw new UsageError(
        `--postmaster "${values.postmaster}" is not a pid: give the postmaster's process id`,
      );
    // The next segments are wanted anyway: those of one WAL bundle are read with one GET.
    const { config, storage } = await setUp(context, {
      readsWal: true,
      walReadAheadBytes: PREFETCH_READ_AHEAD_BYTES,
    });
    const dataDir = values.pgdata ?? walDataDir(config, context.env);
    const stillWanted = await serverStillRecovering(dataDir, postmaster);
    await prefetchAhead({
      storage,
      cluster: config.cluster,
      identities: await readIdentityFile(config.identityFile),
      spool: new WalSpool(config.spoolDir, config.cluster, dataDir),
      after: name,
      count: config.wal.fetchPrefetch,
      retry: walRetryPolicy(config),
      ...(stillWanted ? { stillWanted } : {}),
    });
    return ExitCode.ok;
  },
};
