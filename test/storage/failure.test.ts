/**
 * The one transient rule and the one retry helper: what the three code lists, the secrets status
 * rule and the three backoff loops decided before, decided here (no server needed: the errors are
 * shaped as the AWS SDK and Node's network stack shape them).
 */
import { describe, expect, it } from 'vitest';
import {
  asStorageUnavailable,
  isTransient,
  isTransientFailure,
  mapTransient,
  type RetryPolicy,
  withRetry,
} from '../../storage/failure.ts';
import {
  AccessDeniedError,
  ObjectNotFoundError,
  RepositoryNotFoundError,
  StorageUnavailableError,
} from '../../storage/storage.ts';

const sdkError = (fields: Record<string, unknown>) => Object.assign(new Error('sdk'), fields);
const FAST: RetryPolicy = { deadlineMs: 5_000, initialDelayMs: 1, maxDelayMs: 4 };

describe('isTransient', () => {
  it.each([
    ['a refused connection', sdkError({ code: 'ECONNREFUSED' })],
    ['an unresolved host', sdkError({ code: 'ENOTFOUND' })],
    ['a reset connection', sdkError({ code: 'ECONNRESET' })],
    ['a 503', sdkError({ name: 'ServiceUnavailable', $metadata: { httpStatusCode: 503 } })],
    ['a 429', sdkError({ name: 'TooManyRequests', $metadata: { httpStatusCode: 429 } })],
    ['S3 throttling', sdkError({ name: 'SlowDown', $metadata: { httpStatusCode: 503 } })],
    [
      'Secrets Manager throttling',
      sdkError({ name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } }),
    ],
    ['a server fault', sdkError({ $fault: 'server' })],
    ['an error the SDK marks retryable', sdkError({ $retryable: { throttling: true } })],
    ['a request timeout', sdkError({ name: 'TimeoutError', code: 'ETIMEDOUT' })],
    ['the typed error', new StorageUnavailableError('down')],
    ['the typed error by name, after crossing a state', { name: 'StorageUnavailableError', message: 'x' }],
  ])('%s is transient', (_, error) => {
    expect(isTransient(error)).toBe(true);
  });

  it.each([
    ['access denied', sdkError({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } })],
    ['a missing key', sdkError({ name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } })],
    ['a bad request', sdkError({ name: 'InvalidRequest', $metadata: { httpStatusCode: 400 } })],
    ['typed access denied', new AccessDeniedError('no')],
    ['a missing object', new ObjectNotFoundError('k')],
    ['a programming error', new TypeError('x is undefined')],
    ['not an error at all', undefined],
  ])('%s is not', (_, error) => {
    expect(isTransient(error)).toBe(false);
    expect(isTransientFailure(error)).toBe(false);
  });

  it('counts a missing repository only for callers that wait for one to come back', () => {
    const missing = new RepositoryNotFoundError('directory /mnt/nas does not exist');
    expect(isTransient(missing)).toBe(false);
    expect(isTransient(missing, { missingRepository: true })).toBe(true);
  });
});

describe('asStorageUnavailable and mapTransient', () => {
  it('turn a transient error into a real StorageUnavailableError (what Step Functions retries), keeping the cause', async () => {
    const cause = sdkError({ code: 'ECONNRESET', message: 'socket hang up' });
    const mapped = asStorageUnavailable(cause) as StorageUnavailableError;
    expect(mapped).toBeInstanceOf(StorageUnavailableError);
    expect(mapped.name).toBe('StorageUnavailableError');
    expect(mapped.message).toBe('storage unavailable: socket hang up');
    expect(mapped.cause).toBe(cause);
    await expect(
      mapTransient(async () => {
        throw cause;
      }),
    ).rejects.toBeInstanceOf(StorageUnavailableError);
  });

  it('leave every other error as it is', async () => {
    const denied = new AccessDeniedError('no');
    expect(asStorageUnavailable(denied)).toBe(denied);
    await expect(
      mapTransient(async () => {
        throw denied;
      }),
    ).rejects.toBe(denied);
    expect(await mapTransient(async () => 7)).toBe(7);
  });
});

describe('withRetry', () => {
  it('retries a transient failure until it succeeds', async () => {
    let calls = 0;
    const result = await withRetry('listing x', FAST, async () => {
      if (++calls < 3) throw sdkError({ code: 'ECONNREFUSED' });
      return 'ok';
    });
    expect(result).toBe('ok');
    expect(calls).toBe(3);
  });

  it('does not retry a permanent failure, and rethrows it unchanged', async () => {
    let calls = 0;
    const denied = new AccessDeniedError('denied');
    await expect(
      withRetry('reading x', FAST, async () => {
        calls++;
        throw denied;
      }),
    ).rejects.toBe(denied);
    expect(calls).toBe(1);
  });

  it('gives up at the deadline with a StorageUnavailableError naming the operation, the attempts and the cause', async () => {
    const started = Date.now();
    let calls = 0;
    const error = await withRetry(
      'reading v1/db/wal/x',
      { deadlineMs: 300, initialDelayMs: 20, maxDelayMs: 40 },
      async () => {
        calls++;
        throw sdkError({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:9' });
      },
    ).catch((e: unknown) => e as StorageUnavailableError);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(calls).toBeGreaterThan(2);
    expect(error).toBeInstanceOf(StorageUnavailableError);
    expect(error.message).toMatch(
      new RegExp(
        `^reading v1/db/wal/x failed ${calls} time\\(s\\) over \\d+ s, the repository is unavailable: connect ECONNREFUSED`,
      ),
    );
  });

  it('stops after maxAttempts, and pauses grow with jitter but never beyond the doubled delay', async () => {
    const times: number[] = [];
    await expect(
      withRetry(
        'copy',
        { deadlineMs: 10_000, initialDelayMs: 40, maxDelayMs: 80, maxAttempts: 4 },
        async () => {
          times.push(Date.now());
          throw sdkError({ $metadata: { httpStatusCode: 500 } });
        },
      ),
    ).rejects.toBeInstanceOf(StorageUnavailableError);
    expect(times).toHaveLength(4);
    const pauses = times.slice(1).map((t, i) => t - (times[i] as number));
    // Half to all of 40, 80, 80 ms (timers may fire a little late, never early).
    expect(pauses[0]).toBeGreaterThanOrEqual(19);
    expect(pauses[1]).toBeGreaterThanOrEqual(39);
    expect(pauses[2]).toBeGreaterThanOrEqual(39);
  });

  it('retries what `retryable` accepts, calls onRetry before each pause, and rethrows a non-transient error as it is', async () => {
    const retried: number[] = [];
    const broken = new Error('premature close');
    await expect(
      withRetry('copy', { ...FAST, maxAttempts: 3 }, async () => Promise.reject(broken), {
        retryable: () => true,
        onRetry: (_, attempt) => retried.push(attempt),
      }),
    ).rejects.toBe(broken);
    expect(retried).toEqual([1, 2]);
  });

  it('stops at once when aborted, with the failure as it was', async () => {
    const controller = new AbortController();
    const reset = sdkError({ code: 'ECONNRESET' });
    let calls = 0;
    await expect(
      withRetry(
        'fetch',
        FAST,
        async () => {
          calls++;
          controller.abort();
          throw reset;
        },
        { signal: controller.signal },
      ),
    ).rejects.toBe(reset);
    expect(calls).toBe(1);
  });
});
