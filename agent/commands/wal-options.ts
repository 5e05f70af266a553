/** Settings the WAL commands share, derived from the configuration. */
import type { AgentConfig } from '../config.ts';
import type { RetryPolicy } from '../wal/retry.ts';

/** The bounded retry of a flaky repository: config wal.retrySeconds (PGKEEP_WAL_RETRY_SECONDS). */
export function walRetryPolicy(config: AgentConfig): RetryPolicy {
  return { deadlineMs: config.wal.retrySeconds * 1000, initialDelayMs: 100, maxDelayMs: 5_000 };
}
