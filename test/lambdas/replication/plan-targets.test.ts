// The first step of a replication run: every target planned side by side, a failure of one never
// stopping another, and the run ending there only when every target is finished.
import { describe, expect, it } from 'vitest';
import { PLAN_PAYLOAD_BYTES, planTargets } from '../../../lambdas/replication/plan-targets.ts';
import { EMPTY_SUMMARY, type PlanCopiesOutput } from '../../../lambdas/replication/types.ts';

/** Where planTargets stored the plans too large to pass on. */
const stored = new Map<string, PlanCopiesOutput>();
const store = async (target: string, plan: PlanCopiesOutput) => {
  const key = `pipeline/replication/${target}/plans/${stored.size}.json`;
  stored.set(key, plan);
  return key;
};
const planOf = (plan: unknown) => plan as PlanCopiesOutput;

const base = (target: string): PlanCopiesOutput => ({
  target,
  batches: [],
  manifestKeys: [],
  objectCount: 0,
  more: false,
  truncated: false,
  alreadyPresent: 0,
  expired: 0,
  staleUploads: { aborted: 0, errors: [] },
  listedAt: '2026-11-30T12:00:00.000Z',
  verify: false,
  reconcile: false,
  done: false,
  pendingCursors: null,
  stored: null,
});
const copied = (target: string, objectsFailed = 0): PlanCopiesOutput => ({
  ...base(target),
  done: true,
  manifests: {
    copied: 1,
    waiting: [],
    rejected: [],
    summary: { ...EMPTY_SUMMARY, objectsCopied: 3, objectsFailed, manifestsCopied: 1 },
  },
});

describe('planTargets', () => {
  it('ends the run when every target was copied by its plan, with one record per target', async () => {
    const seen: unknown[] = [];
    const out = await planTargets(
      { targets: ['a', 'b'], execution: { reconcile: true } },
      async (input) => {
        seen.push(input);
        return copied(input.target);
      },
      store,
    );
    expect(seen).toEqual([
      { target: 'a', execution: { reconcile: true } },
      { target: 'b', execution: { reconcile: true } },
    ]);
    expect(out.anyLeft).toBe(false);
    expect(out.execution).toEqual({ reconcile: true });
    expect(out.result).toEqual({
      anyFailed: false,
      targets: ['a', 'b'].map((target) => ({
        target,
        status: 'ok',
        objectsCopied: 3,
        objectsSkipped: 0,
        objectsFailed: 0,
        bytesCopied: 0,
        lagSeconds: 0,
        manifestsCopied: 1,
        manifestsWaiting: 0,
        trustViolations: 0,
      })),
    });
  });

  it('one target failing leaves it to the Map (no plan, the error kept) and the other target is copied', async () => {
    const out = await planTargets(
      { targets: ['a', 'b'] },
      async ({ target }) => {
        if (target === 'b') {
          const error = new Error('b endpoint refused the connection');
          error.name = 'StorageUnavailableError';
          throw error;
        }
        return copied(target);
      },
      store,
    );
    expect(out.anyLeft).toBe(true);
    expect(out.targets).toEqual([
      { target: 'a', plan: copied('a') },
      {
        target: 'b',
        plan: null,
        firstAttempt: {
          error: 'StorageUnavailableError',
          cause: 'storage unavailable: b endpoint refused the connection',
        },
      },
    ]);
  });

  it('a copy that failed its check, or batches left, go on to the Map', async () => {
    const failed = await planTargets({ targets: ['a'] }, async ({ target }) => copied(target, 1), store);
    expect(failed.anyLeft).toBe(true);
    expect(planOf(failed.targets[0]?.plan).done).toBe(true);
    const batches = await planTargets(
      { targets: ['a'] },
      async ({ target }) => ({
        ...base(target),
        batches: [{ cluster: 'main', firstKey: 'k1', lastKey: 'k2', count: 2 }],
      }),
      store,
    );
    expect(batches.anyLeft).toBe(true);
    expect(planOf(batches.targets[0]?.plan).batches).toHaveLength(1);
  });

  it('a plan too large for the state payload is stored and handed on by its key', async () => {
    const keys = Array.from(
      { length: 3000 },
      (_, i) => `v1/main/wal/00000001/${String(i).padStart(24, '0')}`,
    );
    const out = await planTargets(
      { targets: ['a'] },
      async ({ target }) => ({
        ...base(target),
        batches: [
          { cluster: 'main', firstKey: keys[0] as string, lastKey: keys.at(-1) as string, count: 3000, keys },
        ],
      }),
      store,
    );
    expect(JSON.stringify(keys).length).toBeGreaterThan(PLAN_PAYLOAD_BYTES);
    expect(out.anyLeft).toBe(true);
    const passed = planOf(out.targets[0]?.plan);
    const key = passed.stored as string;
    // Passed by reference: one small item per batch, the manifest keys left in the stored plan.
    expect(passed).toMatchObject({ target: 'a', objectCount: 0, manifestKeys: [], stored: key });
    expect(passed.batches).toEqual([{ stored: key, index: 0 }]);
    expect(stored.get(key)?.batches[0]).toMatchObject({ count: 3000, keys });
    expect(JSON.stringify(out).length).toBeLessThan(1024);
  });
});
