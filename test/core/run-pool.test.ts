import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { assertPositiveInteger, runPool } from '../../core/run-pool.ts';

describe('runPool', () => {
  it('runs every item with at most `concurrency` at once', async () => {
    let running = 0;
    let most = 0;
    const done: number[] = [];
    await runPool([1, 2, 3, 4, 5, 6, 7], 3, undefined, async (item) => {
      running++;
      most = Math.max(most, running);
      await sleep(5 + (item % 3) * 5);
      running--;
      done.push(item);
    });
    expect(done.sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(most).toBe(3);
  });

  it('cancels the others on the first failure, starts nothing more, and throws that failure', async () => {
    const started: number[] = [];
    const aborted: number[] = [];
    const failure = new Error('dump of 2 failed');
    await expect(
      runPool([1, 2, 3, 4, 5], 2, undefined, async (item, signal) => {
        started.push(item);
        if (item === 2) throw failure;
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        aborted.push(item);
      }),
    ).rejects.toBe(failure);
    expect(started).toEqual([1, 2]);
    expect(aborted).toEqual([1]);
  });

  it('refuses a concurrency below 1, naming the value', () => {
    expect(() => assertPositiveInteger(0, 'concurrency', 'use at least 1')).toThrow(
      'invalid concurrency 0: use at least 1',
    );
  });
});
