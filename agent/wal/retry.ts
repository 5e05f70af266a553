/**
 * Bounded retries for transient storage failures. PostgreSQL retries archive_command itself, and a
 * restore_command failure can end recovery, so both commands retry a flaky repository for a while
 * but never forever: the deadline is what makes "storage down" an error within bounded time.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { RepositoryNotFoundError, StorageUnavailableError } from '../../storage/storage.ts';

export interface RetryPolicy {
  /** Give up after this long since the first attempt. */
  readonly deadlineMs: number;
  /** First pause between attempts; doubled each time up to {@link maxDelayMs}. */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  deadlineMs: 30_000,
  initialDelayMs: 100,
  maxDelayMs: 5_000,
};

/**
 * True for errors a later attempt may not see: the repository was unreachable or failed on its
 * side, or its bucket/directory is missing (an unmounted NAS comes back).
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof StorageUnavailableError || error instanceof RepositoryNotFoundError) return true;
  const code = (error as { code?: unknown } | undefined)?.code;
  return (
    typeof code === 'string' &&
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN'].includes(code)
  );
}

/**
 * Runs `attempt` until it succeeds, fails with a non-transient error, or the deadline passes; then
 * rethrows the last error. `what` names the operation in the error.
 */
export async function withRetry<T>(
  what: string,
  policy: RetryPolicy,
  attempt: () => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const started = Date.now();
  let delay = policy.initialDelayMs;
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      const elapsed = Date.now() - started;
      if (!isTransient(error) || signal?.aborted || elapsed + delay > policy.deadlineMs) {
        if (isTransient(error)) {
          throw new StorageUnavailableError(
            `${what} failed ${tries} time(s) over ${Math.round(elapsed / 1000)} s, the repository is unavailable: ${(error as Error).message}`,
            { cause: error },
          );
        }
        throw error;
      }
      await sleep(delay, undefined, signal ? { signal } : undefined);
      delay = Math.min(delay * 2, policy.maxDelayMs);
    }
  }
}
