/** Settings the WAL commands share, derived from the configuration. */
import { basename, dirname, join, resolve } from 'node:path';
import type { Storage } from '../../storage/storage.ts';
import type { AgentConfig } from '../config.ts';
import type { WalPushOptions } from '../wal/push.ts';
import type { RetryPolicy } from '../wal/retry.ts';
import type { WalSpool } from '../wal/spool.ts';

/** The bounded retry of a flaky repository: config wal.retrySeconds (PGKEEP_WAL_RETRY_SECONDS). */
export function walRetryPolicy(config: AgentConfig): RetryPolicy {
  return { deadlineMs: config.wal.retrySeconds * 1000, initialDelayMs: 100, maxDelayMs: 5_000 };
}

/**
 * Everything of a push but the file, as the agent, the transient pusher and wal-push make it.
 * `pgWalDir`, when known, names the data directory whose pg_control WAL must match.
 */
export function walPushSettings(
  config: AgentConfig,
  storage: Storage,
  recipients: readonly string[],
  spool: WalSpool,
  pgWalDir?: string,
): Omit<WalPushOptions, 'path'> {
  return {
    storage,
    cluster: config.cluster,
    recipients,
    ...(pgWalDir ? { dataDir: join(pgWalDir, '..') } : {}),
    cacheDir: spool.root,
    retry: walRetryPolicy(config),
    zstdLevel: config.zstdLevel,
  };
}

/**
 * The pg_wal the agent and the transient pusher watch: `flag` (--pg-wal), else wal.pgWalDir,
 * else $PGDATA/pg_wal, else ./pg_wal (archive_command runs in the data directory).
 */
export function watchedPgWalDir(config: AgentConfig, env: NodeJS.ProcessEnv, flag?: string): string {
  return resolve(flag ?? config.wal.pgWalDir ?? (env.PGDATA ? join(env.PGDATA, 'pg_wal') : 'pg_wal'));
}

/**
 * The data directory a WAL command works for, which keys its spool (WalSpool): the directory
 * above `pg_wal` when `walPath` (archive_command's %p, restore_command's %p) is in one, else the
 * one whose pg_wal the pusher watches ({@link watchedPgWalDir}), so wal-push run by hand on a
 * file elsewhere and the pusher it starts share one spool.
 */
export function walDataDir(config: AgentConfig, env: NodeJS.ProcessEnv, walPath?: string): string {
  const dir = walPath === undefined ? undefined : dirname(resolve(walPath));
  if (dir !== undefined && basename(dir) === 'pg_wal') return dirname(dir);
  return dirname(watchedPgWalDir(config, env));
}
