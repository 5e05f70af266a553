/** Settings the WAL commands share, derived from the configuration. */
import { join } from 'node:path';
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
