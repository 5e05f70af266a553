/**
 * Bounded retries for WAL commands. PostgreSQL retries archive_command itself, and a
 * restore_command failure can end recovery, so both commands retry a flaky repository for a while
 * but never forever: the deadline is what makes "storage down" an error within bounded time. The
 * rule and the loop are storage's (storage/failure.ts); what the agent adds is waiting for a
 * missing repository too, since an unmounted NAS comes back.
 */
import { isTransient, type RetryPolicy, withRetry as retryStorage } from '../../storage/failure.ts';

export type { RetryPolicy };

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  deadlineMs: 30_000,
  initialDelayMs: 100,
  maxDelayMs: 5_000,
};

/**
 * Runs `attempt` until it succeeds, fails with a non-transient error, or the deadline passes; a
 * transient error that outlasts it becomes a StorageUnavailableError. `what` names the operation.
 */
export function withRetry<T>(
  what: string,
  policy: RetryPolicy,
  attempt: () => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  return retryStorage(what, policy, attempt, {
    ...(signal ? { signal } : {}),
    retryable: (error) => isTransient(error, { missingRepository: true }),
  });
}
