/**
 * The one home for "did this fail for good?": which errors a later attempt may not see, and how
 * long to keep trying. The agent (WAL push and fetch), the S3 driver's error mapper and every
 * Lambda ask these functions, so a new transient code is added here once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { runBounded } from './attempt-signal.ts';
import { RepositoryNotFoundError, StorageUnavailableError } from './storage.ts';

/** Node errno codes of a network that did not carry the request (refused, reset, unresolved, timed out). */
export const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPROTO',
]);

/** Error names of the AWS SDKs and Node for a request that timed out, was throttled or was cut off. */
const TRANSIENT_ERROR_NAMES: ReadonlySet<string> = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'AbortError',
]);

/** The fields of an AWS SDK or Node error that classify it. */
export interface ErrorFacts {
  readonly name?: string;
  readonly message?: string;
  readonly code?: string;
  readonly $fault?: string;
  readonly $retryable?: unknown;
  readonly $metadata?: { readonly httpStatusCode?: number };
}

/**
 * True for a raw SDK or network error that a later attempt may not see: the network did not carry
 * the request, the request timed out or was throttled, or the server failed on its side (5xx, 429).
 * Typed storage errors are classified by {@link isTransient}.
 */
export function isTransientFailure(error: unknown): boolean {
  if (error === null || typeof error !== 'object') return false;
  const { name, code, $fault, $retryable, $metadata } = error as ErrorFacts;
  const status = $metadata?.httpStatusCode;
  // The SDK marks a skewed signature retryable (it corrects its offset); a wrong clock stays wrong.
  if (name === 'RequestTimeTooSkewed' || name === 'ClockSkewError') return false;
  return (
    Boolean($retryable) ||
    $fault === 'server' ||
    (status !== undefined && (status >= 500 || status === 429)) ||
    (code !== undefined && NETWORK_ERROR_CODES.has(code)) ||
    (name !== undefined && TRANSIENT_ERROR_NAMES.has(name))
  );
}

/**
 * The one "transient" rule: a {@link StorageUnavailableError} (also by name, for an error that
 * crossed a process or a Step Functions state), or a raw error {@link isTransientFailure} accepts.
 * With `missingRepository`, a {@link RepositoryNotFoundError} counts too: an unmounted NAS or a
 * bucket being created comes back, which the agent waits for but a pipeline step does not.
 */
export function isTransient(error: unknown, options: { readonly missingRepository?: boolean } = {}): boolean {
  if (error instanceof StorageUnavailableError) return true;
  if (options.missingRepository && error instanceof RepositoryNotFoundError) return true;
  if ((error as ErrorFacts | undefined)?.name === 'StorageUnavailableError') return true;
  return isTransientFailure(error);
}

/**
 * A transient error as a {@link StorageUnavailableError} (whose name Step Functions' Retry
 * matches); any other error unchanged.
 */
export function asStorageUnavailable(error: unknown): unknown {
  if (error instanceof StorageUnavailableError || !isTransient(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new StorageUnavailableError(`storage unavailable: ${message}`, { cause: error });
}

/** Runs `work`, turning a transient failure into a {@link StorageUnavailableError}. */
export async function mapTransient<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw asStorageUnavailable(error);
  }
}

export interface RetryPolicy {
  /** Give up once the next pause would end after this long since the first attempt. */
  readonly deadlineMs: number;
  /** First pause between attempts; doubled each time up to {@link maxDelayMs}, then jittered. */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** Give up after this many attempts as well. @default - no limit but the deadline */
  readonly maxAttempts?: number;
}

export interface RetryOptions {
  /** Stops retrying (the pause in progress ends at once). */
  readonly signal?: AbortSignal;
  /** Which failures are tried again. @default - {@link isTransient} */
  readonly retryable?: (error: unknown) => boolean;
  /** Called before each pause, e.g. to forget what a failed attempt wrote. */
  readonly onRetry?: (error: unknown, attempt: number) => void;
}

/**
 * Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or the policy's
 * deadline or attempts run out. Pauses grow exponentially with jitter (half to all of the
 * doubled delay), so callers that failed together do not retry together. Each attempt runs with
 * an abort signal (storage/attempt-signal.ts) that fires at the deadline, which the S3 driver
 * passes to its requests: a request that never answers ends with the deadline. A transient error
 * that outlasts the policy becomes a {@link StorageUnavailableError} naming `what`, the attempts
 * and the time; any other error is rethrown as it is.
 */
export async function withRetry<T>(
  what: string,
  policy: RetryPolicy,
  attempt: () => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const { signal, retryable = (error: unknown) => isTransient(error) } = options;
  const started = Date.now();
  let delay = policy.initialDelayMs;
  for (let tries = 1; ; tries++) {
    try {
      // The deadline bounds the request in flight too, not only the pauses between attempts.
      return await runBounded(policy.deadlineMs - (Date.now() - started), signal, attempt);
    } catch (error) {
      // Stopped from outside: the caller's reason, never relabelled.
      if (signal?.aborted) throw error;
      const elapsed = Date.now() - started;
      const pause = delay / 2 + Math.random() * (delay / 2);
      const outOfTries = policy.maxAttempts !== undefined && tries >= policy.maxAttempts;
      if (!retryable(error) || outOfTries || elapsed + pause > policy.deadlineMs) {
        if (retryable(error) && isTransient(error, { missingRepository: true })) {
          throw new StorageUnavailableError(
            `${what} failed ${tries} time(s) over ${Math.round(elapsed / 1000)} s, the repository is unavailable: ${(error as Error).message}`,
            { cause: error },
          );
        }
        throw error;
      }
      options.onRetry?.(error, tries);
      await sleep(pause, undefined, signal ? { signal } : undefined);
      delay = Math.min(delay * 2, policy.maxDelayMs);
    }
  }
}
