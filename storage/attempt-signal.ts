/**
 * The signal that bounds the storage attempt in progress. {@link withRetry} runs each attempt
 * with one that fires when the retry deadline passes, and the S3 driver hands it to every request
 * it sends: a blackholed connection then ends with the caller's retry time, not with the client's
 * idle or request timeout. Carried in async context rather than through every Storage method, so
 * that the bound holds for every caller of the retry loop without each one passing it on.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

const current = new AsyncLocalStorage<AbortSignal>();

/** The signal of the innermost bounded attempt this code runs in, if any. */
export function attemptSignal(): AbortSignal | undefined {
  return current.getStore();
}

/** Why an attempt was stopped: its retry deadline passed (a transient failure, by name). */
export class AttemptDeadlineError extends Error {
  override name = 'TimeoutError';
}

/**
 * Runs `attempt` with a signal that aborts after `timeoutMs` (no timer for an infinite or
 * non-positive bound: "try once" is bounded by the client's own timeouts), or when `outer` or the
 * enclosing attempt's signal aborts. The timer is cleared once the attempt settles, so a stream
 * it returned is never cut off later.
 */
export async function runBounded<T>(
  timeoutMs: number,
  outer: AbortSignal | undefined,
  attempt: () => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const bounded = Number.isFinite(timeoutMs) && timeoutMs > 0;
  const timer = bounded
    ? setTimeout(
        () =>
          controller.abort(
            new AttemptDeadlineError(
              `the attempt did not finish within its ${Math.ceil(timeoutMs)} ms retry deadline`,
            ),
          ),
        timeoutMs,
      )
    : undefined;
  timer?.unref();
  const signals = [controller.signal, outer, current.getStore()].filter(
    (signal): signal is AbortSignal => signal !== undefined,
  );
  try {
    return await current.run(AbortSignal.any(signals), attempt);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}
