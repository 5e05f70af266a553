/**
 * A bounded pool of async work with a window, cancelled as a whole by the first failure. Pure: the
 * replication Lambdas copy parts with it and the agent dumps databases with it.
 */

/** Throws a RangeError naming `what`, the value and the fix unless `value` is a whole number >= 1. */
export function assertPositiveInteger(value: number, what: string, fix: string): void {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`invalid ${what} ${value}: ${fix}`);
}

/**
 * Runs `work` over `items` with at most `concurrency` at once. With `window`, item i starts only
 * once every item before i - window has finished (bounds what an in-order consumer must hold).
 * The first failure cancels the others (through the signal given to `work`) and is thrown once
 * all have settled.
 */
export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  window: number | undefined,
  work: (item: T, signal: AbortSignal) => Promise<void>,
  outer?: AbortSignal,
): Promise<void> {
  assertPositiveInteger(concurrency, 'concurrency', 'use at least 1');
  const controller = new AbortController();
  let wake: (() => void)[] = [];
  const notify = () => {
    const waiting = wake;
    wake = [];
    for (const resolve of waiting) resolve();
  };
  const onOuterAbort = () => {
    controller.abort(outer?.reason);
    notify();
  };
  if (outer?.aborted) throw outer.reason;
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  let next = 0;
  let lowestUnfinished = 0;
  const finished = new Set<number>();
  let firstError: unknown;
  const worker = async () => {
    while (!controller.signal.aborted) {
      const i = next;
      if (i >= items.length) return;
      if (window !== undefined && i >= lowestUnfinished + window) {
        await new Promise<void>((resolve) => wake.push(resolve));
        continue;
      }
      next++;
      try {
        await work(items[i] as T, controller.signal);
      } catch (error) {
        firstError ??= error;
        controller.abort(error);
        notify();
        return;
      }
      finished.add(i);
      while (finished.has(lowestUnfinished)) finished.delete(lowestUnfinished++);
      notify();
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
  }
  if (firstError !== undefined) throw firstError;
  if (controller.signal.aborted) throw controller.signal.reason;
}
