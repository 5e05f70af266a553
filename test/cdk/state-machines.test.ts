// The synthesized state machine definitions validate and run in aws-local-stepfunctions, with
// every Task bound to a local function: what the console shows is what these runs walk through.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUpTarget } from '../../lambdas/replication/copy-manifests.ts';
import { planTargets } from '../../lambdas/replication/plan-targets.ts';
import type {
  CopyManifestsInput,
  PlanCopiesInput,
  PlanCopiesOutput,
  PlanTargetsInput,
} from '../../lambdas/replication/types.ts';
import { MAX_PRUNE_ROUNDS } from '../../lambdas/retention/types.ts';
import {
  allStates,
  ExecutionFailed,
  loadStateMachine,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

let pipeline: SynthesizedPipeline;
beforeAll(() => {
  pipeline = synthPipeline();
});
afterAll(() => pipeline?.dispose());

const CAPABILITIES = ['replication', 'retention', 'verification'] as const;

/** An error as a Lambda handler throws it: Step Functions matches on `name`. */
function failure(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}

/**
 * The plan function's binding from a stub for one target: the first step's input (every target)
 * goes through the real planTargets, as in the Lambda.
 */
function planFn(one: (input: PlanCopiesInput) => unknown) {
  const stored = new Map<string, PlanCopiesOutput>();
  const store = async (target: string, plan: PlanCopiesOutput) => {
    const key = `pipeline/replication/${target}/plans/${stored.size}.json`;
    stored.set(key, plan);
    return key;
  };
  return (input: unknown) => {
    if ('targets' in (input as object))
      return planTargets(input as PlanTargetsInput, async (i) => (await one(i)) as PlanCopiesOutput, store);
    return one(input as PlanCopiesInput);
  };
}

/** A delete step that records `<target>:<key>` of every key it is given, and deletes them all. */
function recordDeletes(deleted: string[]) {
  return (input: unknown) => {
    const { target, batch } = input as { target: string; batch: { keys: string[] } };
    deleted.push(...batch.keys.map((k) => `${target}:${k}`));
    return { deleted: batch.keys.length, locked: [] };
  };
}

/** The retention machine's alert states, for a run that must raise none. */
const NO_RETENTION_ALERTS = Object.fromEntries(
  ['Alert retention failure', 'Alert ingest pruning failure'].map((state) => [
    state,
    () => {
      throw new Error(`no alert expected (${state})`);
    },
  ]),
);
describe('every state machine definition', () => {
  it.each(CAPABILITIES)(
    '%s validates (asl-validator, ARNs and paths checked) and is JSONPath only',
    (capability) => {
      const machine = pipeline.stateMachine(capability);
      expect(() => loadStateMachine(machine)).not.toThrow();
      expect(machine.definition.QueryLanguage ?? 'JSONPath').toBe('JSONPath');
      for (const [name, state] of allStates(machine.definition)) {
        expect(state.QueryLanguage ?? 'JSONPath', name).toBe('JSONPath');
        expect(state.ItemBatcher, name).toBeUndefined();
      }
    },
  );

  it.each(CAPABILITIES)('%s has Retry and Catch on every Task state', (capability) => {
    const tasks = allStates(pipeline.stateMachine(capability).definition).filter(
      ([, s]) => s.Type === 'Task',
    );
    expect(tasks.length).toBeGreaterThan(1);
    for (const [name, state] of tasks) {
      expect(state.Retry?.length, `${name} Retry`).toBeGreaterThan(0);
      expect(state.Catch?.length, `${name} Catch`).toBeGreaterThan(0);
    }
  });

  it.each(CAPABILITIES)('%s names its states in words (a run reads well in the console)', (capability) => {
    for (const [name] of allStates(pipeline.stateMachine(capability).definition))
      expect(name).toMatch(/^[A-Z][a-z]+( [A-Za-z0-9?]+)+$/);
  });
});

describe('replication', () => {
  const batch = (n: number) => ({
    cluster: 'main',
    firstKey: `v1/main/wal/00000001/${n}a`,
    lastKey: `v1/main/wal/00000001/${n}z`,
    count: 2,
  });
  const plan = (target: string, batches: unknown[], more = false, manifestKeys: string[] = []) => ({
    target,
    batches,
    manifestKeys,
    objectCount: batches.length * 2,
    more,
    truncated: more,
    alreadyPresent: 3,
    verify: false,
    reconcile: false,
    // These plans go through the batch Map; "a small plan is copied by the plan step" is tested below.
    done: false,
    pendingCursors: null,
    stored: null,
  });
  const batchResult = (copied: number, large: unknown[] = []) => ({
    copied,
    skipped: 0,
    failed: 0,
    bytes: copied * 10,
    failedKeys: [],
    tampered: 0,
    large,
  });
  /** "Copy and verify manifests" as a stub: the real totals arithmetic, no storage. */
  const manifestsStub = (input: unknown) => {
    const i = input as CopyManifestsInput;
    return {
      copied: i.manifestKeys.length,
      waiting: [],
      rejected: [],
      summary: addUpTarget(
        i,
        { copied: i.manifestKeys.length, skipped: 0, waiting: 0, rejected: [] },
        new Date(),
      ),
    };
  };

  /** A plan the plan step copied itself: one batch of 2 objects and one manifest. */
  const copiedPlan = (target: string) => {
    const copied = { ...batchResult(2), large: [], cluster: 'main' };
    const summary = addUpTarget(
      { batches: [copied], plan: { alreadyPresent: 3, more: false } },
      { copied: 1, skipped: 0, waiting: 0, rejected: [] },
      new Date(),
    );
    return { ...plan(target, []), done: true, manifests: { copied: 1, waiting: [], rejected: [], summary } };
  };
  /** Each target's plan copied by the plan step (`small`) or left to the batch Map. */
  const smallOrMap = (small: (target: string) => boolean) => ({
    lambdas: {
      'replication/plan-copies': planFn(({ target }) =>
        small(target)
          ? copiedPlan(target)
          : plan(target, [batch(1)], false, ['v1/main/manifests/20261122T021500Z-1a2b.json']),
      ),
      'replication/copy-batch': () => batchResult(2),
      'replication/copy-manifests': manifestsStub,
      'replication/copy-large': () => ({}),
    },
    states: {
      'Alert replication failure': () => {
        throw new Error('no alert expected');
      },
    },
  });

  it('a small run ends after the first step: at most 4 states entered, the same output as through the Map', async () => {
    const machine = pipeline.stateMachine('replication');
    const viaMap = await runStateMachine(
      machine,
      smallOrMap(() => false),
      {},
    );
    const small = await runStateMachine(
      machine,
      smallOrMap(() => true),
      {},
    );
    const mixed = await runStateMachine(
      machine,
      smallOrMap((t) => t === 'dr-aws'),
      {},
    );
    expect(small.statesEntered).toEqual([
      'Plan and copy every target',
      'Anything left to copy?',
      'Replicated by the first step',
    ]);
    expect(small.statesEntered.length).toBeLessThanOrEqual(4);
    // Every path reports the same per-target summary (what the console shows).
    expect(small.output).toEqual(viaMap.output);
    expect(mixed.output).toEqual(viaMap.output);
    // The target copied by the first step is only recorded by the Map; the other goes through it.
    expect(mixed.statesEntered.filter((s) => s === 'Target replicated by the plan')).toHaveLength(1);
    expect(mixed.statesEntered.filter((s) => s === 'Copy batch to target')).toHaveLength(1);
    expect(mixed.statesEntered).not.toContain('List objects missing on target');
    // Two targets: every state entered is a billed transition (docs/costs.md takes these counts).
    console.info(
      `replication states entered per run, 2 targets: ${small.statesEntered.length} when the first step copied both, ${mixed.statesEntered.length} with one target through the batch Map, ${viaMap.statesEntered.length} with both (1 batch each)`,
    );
  });

  it('a first step that fails as a whole (a timeout) leaves every target to the Map, which plans it', async () => {
    const planned: string[] = [];
    const bindings = smallOrMap(() => true);
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        ...bindings,
        lambdas: {
          ...bindings.lambdas,
          'replication/plan-copies': (input: unknown) => {
            if ('targets' in (input as object)) throw failure('States.Timeout', 'the plan step timed out');
            const { target, execution } = input as PlanCopiesInput;
            planned.push(`${target}:${JSON.stringify(execution)}`);
            return copiedPlan(target);
          },
        },
      },
      { reconcile: true },
    );
    // The execution input reaches each target's plan unchanged (a reconcile stays a reconcile).
    expect(planned.sort()).toEqual(['b2:{"reconcile":true}', 'dr-aws:{"reconcile":true}']);
    expect(run.statesEntered).toContain('Plan each target separately');
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 2 },
        { target: 'b2', status: 'ok', objectsCopied: 2 },
      ],
    });
  });

  it('a plan too large to pass on is stored by the first step and passed by reference: small Map items, not planned again', async () => {
    const plans: string[] = [];
    const keys = Array.from(
      { length: 3000 },
      (_, i) => `v1/main/wal/00000001/${String(i).padStart(24, '0')}`,
    );
    const big = { cluster: 'main', firstKey: keys[0], lastKey: keys.at(-1), count: 3000, keys };
    const copies: unknown[] = [];
    const manifests: unknown[] = [];
    const map = smallOrMap(() => false);
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        ...map,
        lambdas: {
          ...map.lambdas,
          'replication/plan-copies': planFn(({ target }) => {
            plans.push(target);
            return plan(target, [big, big], false, ['v1/main/manifests/20261122T021500Z-1a2b.json']);
          }),
          'replication/copy-batch': (input) => {
            copies.push((input as { batch: unknown }).batch);
            return batchResult(2);
          },
          'replication/copy-manifests': (input) => {
            manifests.push(input);
            return manifestsStub(input);
          },
        },
      },
      {},
    );
    expect(plans.sort()).toEqual(['b2', 'dr-aws']);
    // Each invocation gets the stored plan's key and its batch's index, never the keys themselves.
    expect(copies).toHaveLength(4);
    for (const batch of copies)
      expect(batch).toEqual({
        stored: expect.stringMatching(/^pipeline\/replication\/(b2|dr-aws)\/plans\//),
        index: expect.any(Number),
      });
    expect(manifests).toEqual([
      expect.objectContaining({ manifestKeys: [], stored: expect.stringContaining('/plans/') }),
      expect.objectContaining({ manifestKeys: [], stored: expect.stringContaining('/plans/') }),
    ]);
    expect(run.largestPayload.bytes).toBeLessThan(16 * 1024);
    expect(run.output).toMatchObject({ anyFailed: false });
  });

  it('a run whose state data outgrows 256 KiB fails as in AWS, naming the state', async () => {
    const keys = Array.from(
      { length: 4000 },
      (_, i) => `v1/main/wal/00000001/${String(i).padStart(64, '0')}`,
    );
    const map = smallOrMap(() => false);
    const failed = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        ...map,
        lambdas: {
          ...map.lambdas,
          // A planner that ignores the limit and returns every key in its result.
          'replication/plan-copies': () => ({ targets: [], anyLeft: true, keys }),
        },
      },
      {},
    ).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ExecutionFailed);
    expect((failed as ExecutionFailed).error).toBe('States.DataLimitExceeded');
    expect((failed as Error).message).toMatch(/result of state "Plan and copy every target" is \d+ bytes/);
  });

  it('plans, copies every batch and the manifests of every target, and succeeds with a per-target summary', async () => {
    const copied: string[] = [];
    const manifests: string[] = [];
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) =>
            plan((input as { target: string }).target, [batch(1), batch(2)], false, [
              'v1/main/manifests/20261122T021500Z-1a2b.json',
            ]),
          ),
          'replication/copy-batch': (input) => {
            const { target, batch } = input as { target: string; batch: { firstKey: string } };
            copied.push(`${target}:${batch.firstKey}`);
            return batchResult(2);
          },
          'replication/copy-manifests': (input) => {
            const { target, manifestKeys } = input as { target: string; manifestKeys: string[] };
            manifests.push(...manifestKeys.map((k) => `${target}:${k}`));
            return manifestsStub(input);
          },
          'replication/copy-large': () => {
            throw new Error('no large object expected');
          },
        },
        states: {
          'Alert replication failure': () => {
            throw new Error('no alert expected');
          },
        },
      },
      { trigger: 'schedule' },
    );
    expect(copied.sort()).toEqual([
      'b2:v1/main/wal/00000001/1a',
      'b2:v1/main/wal/00000001/2a',
      'dr-aws:v1/main/wal/00000001/1a',
      'dr-aws:v1/main/wal/00000001/2a',
    ]);
    expect(manifests.sort()).toEqual([
      'b2:v1/main/manifests/20261122T021500Z-1a2b.json',
      'dr-aws:v1/main/manifests/20261122T021500Z-1a2b.json',
    ]);
    const summary = {
      status: 'ok',
      objectsCopied: 4,
      objectsSkipped: 3,
      objectsFailed: 0,
      bytesCopied: 40,
      lagSeconds: 0,
      manifestsCopied: 1,
      manifestsWaiting: 0,
      trustViolations: 0,
    };
    expect(run.output).toEqual({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', ...summary },
        { target: 'b2', ...summary },
      ],
    });
    expect(run.statesEntered).toEqual(
      expect.arrayContaining([
        'Plan and copy every target',
        'Anything left to copy?',
        'Replicate to each target',
        'Copy batch to target',
        'Large objects to copy?',
        'Copy and verify manifests',
        'Replication complete',
      ]),
    );
    expect(run.statesEntered).not.toContain('Start large copy');
  });

  it('copies a large object by fanning out over part ranges, then completes it', async () => {
    const object = {
      key: 'v1/main/base/20261122T021500Z-1a2b/base.tar.zst.age',
      sizeBytes: 30,
      lastModified: 'x',
    };
    const copy = { sizeBytes: 30, partSizeBytes: 10, partCount: 3, uploadId: 'u1' };
    const partCalls: number[][] = [];
    const completed: unknown[] = [];
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) =>
            plan((input as { target: string }).target, [batch(1)]),
          ),
          'replication/copy-batch': () => batchResult(1, [object]),
          'replication/copy-manifests': manifestsStub,
          'replication/copy-large': (input) => {
            const i = input as { step: string; partNumbers?: number[]; parts?: unknown };
            if (i.step === 'start') return { copy, partNumberBatches: [[1, 2], [3]] };
            if (i.step === 'parts') {
              partCalls.push(i.partNumbers ?? []);
              return (i.partNumbers ?? []).map((n) => ({ partNumber: n, etag: `e${n}`, sizeBytes: 10 }));
            }
            if (i.step === 'complete') {
              completed.push(i.parts);
              return { copied: 1, bytes: 30, verifiedBy: 'read' };
            }
            throw new Error(`unexpected step ${i.step}`);
          },
        },
        states: { 'Alert replication failure': () => ({}) },
      },
      {},
    );
    expect(partCalls.sort()).toEqual([[1, 2], [1, 2], [3], [3]]);
    expect(completed[0]).toEqual([
      [
        { partNumber: 1, etag: 'e1', sizeBytes: 10 },
        { partNumber: 2, etag: 'e2', sizeBytes: 10 },
      ],
      [{ partNumber: 3, etag: 'e3', sizeBytes: 10 }],
    ]);
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', objectsCopied: 2, bytesCopied: 40 },
        { target: 'b2', objectsCopied: 2, bytesCopied: 40 },
      ],
    });
    expect(run.statesEntered).toEqual(
      expect.arrayContaining([
        'Start large copy',
        'Copy part ranges',
        'Copy part range',
        'Complete large copy',
      ]),
    );
  });

  it('copies the large objects of all batches after every batch and before the manifests, each once', async () => {
    const large = (name: string) => ({
      key: `v1/main/base/20261122T021500Z-1a2b/${name}.tar.zst.age`,
      sizeBytes: 30,
      lastModified: 'x',
    });
    // Batch 1 leaves two large objects, batch 2 none, batch 3 one.
    const largeOf: Record<string, unknown[]> = {
      'v1/main/wal/00000001/1a': [large('base'), large('16385')],
      'v1/main/wal/00000001/2a': [],
      'v1/main/wal/00000001/3a': [large('16386')],
    };
    const events: string[] = [];
    const largeCopies: unknown[] = [];
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) =>
            plan((input as { target: string }).target, [batch(1), batch(2), batch(3)]),
          ),
          'replication/copy-batch': (input) => {
            const { target, batch: b } = input as { target: string; batch: { firstKey: string } };
            events.push(`${target} batch`);
            return batchResult(1, largeOf[b.firstKey]);
          },
          'replication/copy-manifests': (input) => {
            const i = input as CopyManifestsInput;
            events.push(`${i.target} manifests`);
            largeCopies.push(i.largeCopies);
            return manifestsStub(input);
          },
          'replication/copy-large': (input) => {
            const i = input as { step: string; target: string; object: { key: string } };
            if (i.step === 'start') {
              events.push(`${i.target} large ${i.object.key}`);
              return {
                copy: { sizeBytes: 30, partSizeBytes: 30, partCount: 1, uploadId: 'u' },
                partNumberBatches: [[1]],
              };
            }
            if (i.step === 'parts') return [{ partNumber: 1, etag: 'e1', sizeBytes: 30 }];
            if (i.step === 'complete') return { copied: 1, bytes: 30, verifiedBy: 'read' };
            throw new Error(`unexpected step ${i.step}`);
          },
        },
        states: { 'Alert replication failure': () => ({}) },
      },
      {},
    );
    for (const target of ['dr-aws', 'b2']) {
      const mine = events
        .filter((e) => e.startsWith(`${target} `))
        .map((e) => e.split(' ').slice(1).join(' '));
      expect(mine.slice(0, 3)).toEqual(['batch', 'batch', 'batch']);
      expect(mine.slice(3, 6).sort()).toEqual(['16385', '16386', 'base'].map((n) => `large ${large(n).key}`));
      expect(mine.slice(6)).toEqual(['manifests']);
    }
    expect(largeCopies).toEqual([
      [
        { copied: 1, bytes: 30, verifiedBy: 'read' },
        { copied: 1, bytes: 30, verifiedBy: 'read' },
        { copied: 1, bytes: 30, verifiedBy: 'read' },
      ],
      [
        { copied: 1, bytes: 30, verifiedBy: 'read' },
        { copied: 1, bytes: 30, verifiedBy: 'read' },
        { copied: 1, bytes: 30, verifiedBy: 'read' },
      ],
    ]);
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', objectsCopied: 6, bytesCopied: 120 },
        { target: 'b2', objectsCopied: 6, bytesCopied: 120 },
      ],
    });
    // One Choice per round and target, however many batches; each batch invocation is one state.
    expect(run.statesEntered.filter((s) => s === 'Large objects to copy?')).toHaveLength(2);
    expect(run.statesEntered.filter((s) => s === 'Collect large objects')).toHaveLength(2);
    expect(run.statesEntered.filter((s) => s === 'Copy batch to target')).toHaveLength(6);
  });

  it('a part range that keeps failing aborts the large copy and fails only that target', async () => {
    const object = {
      key: 'v1/main/base/20261122T021500Z-1a2b/base.tar.zst.age',
      sizeBytes: 30,
      lastModified: 'x',
    };
    const aborted: string[] = [];
    const alerts: { Message?: string }[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) =>
            plan((input as { target: string }).target, [batch(1)]),
          ),
          'replication/copy-batch': () => batchResult(0, [object]),
          'replication/copy-manifests': manifestsStub,
          'replication/copy-large': (input) => {
            const i = input as { step: string; target: string };
            if (i.step === 'start')
              return {
                copy: { sizeBytes: 30, partSizeBytes: 10, partCount: 3, uploadId: 'u1' },
                partNumberBatches: [[1, 2, 3]],
              };
            if (i.step === 'parts' && i.target === 'b2')
              throw failure('StorageUnavailableError', 'b2 went away');
            if (i.step === 'parts')
              return [1, 2, 3].map((n) => ({ partNumber: n, etag: `e${n}`, sizeBytes: 10 }));
            if (i.step === 'abort') {
              aborted.push(i.target);
              return { aborted: true };
            }
            return { copied: 1, bytes: 30, verifiedBy: 'read' };
          },
        },
        states: { 'Alert replication failure': (input) => alerts.push(input as { Message?: string }) },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect(aborted).toEqual(['b2']);
    expect(alerts.map((a) => a.Message)).toEqual(['Replication to target b2 failed: b2 went away']);
    expect((failed as ExecutionFailed).statesEntered).toEqual(
      expect.arrayContaining(['Abort large copy', 'Large copy failed', 'Target failed', 'Target replicated']),
    );
  });

  it('keeps planning and copying while the plan says there is more, then finishes the target', async () => {
    const plans: Record<string, number> = {};
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) => {
            const { target } = input as { target: string };
            plans[target] = (plans[target] ?? 0) + 1;
            const more = plans[target] < 3;
            return { ...plan(target, more ? [batch(plans[target])] : [], more), alreadyPresent: 0 };
          }),
          'replication/copy-batch': () => batchResult(2),
          'replication/copy-manifests': manifestsStub,
          'replication/copy-large': () => ({}),
        },
        states: { 'Alert replication failure': () => ({}) },
      },
      {},
    );
    expect(plans).toEqual({ 'dr-aws': 3, b2: 3 });
    expect(run.statesEntered.filter((s) => s === 'Copy batch to target')).toHaveLength(4);
    // The totals add up over the rounds of one execution.
    expect(run.output).toMatchObject({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', objectsCopied: 4 },
        { target: 'b2', objectsCopied: 4 },
      ],
    });
  });

  it('one target down fails only its branch: it alerts, the other target is replicated, the run fails', async () => {
    const alerts: unknown[] = [];
    const copiedTargets = new Set<string>();
    const attempts: Record<string, number> = {};
    const failed = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) => {
            const { target } = input as { target: string };
            attempts[target] = (attempts[target] ?? 0) + 1;
            if (target === 'b2')
              throw failure('StorageUnavailableError', 'b2 endpoint refused the connection');
            return plan(target, [batch(1)]);
          }),
          'replication/copy-batch': (input) => {
            copiedTargets.add((input as { target: string }).target);
            return batchResult(2);
          },
          'replication/copy-manifests': manifestsStub,
          'replication/copy-large': () => ({}),
        },
        states: { 'Alert replication failure': (input) => alerts.push(input) },
      },
      {},
    ).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ExecutionFailed);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect([...copiedTargets]).toEqual(['dr-aws']);
    // Once in the first step, then by the Map's own step, retried (MaxAttempts 3: four attempts)
    // before the branch gave up.
    expect(attempts.b2).toBe(5);
    expect(attempts['dr-aws']).toBe(1);
    expect(alerts).toEqual([
      expect.objectContaining({
        Subject: 'pgkeep: replication to a target failed',
        Message: 'Replication to target b2 failed: b2 endpoint refused the connection',
      }),
    ]);
    expect((failed as ExecutionFailed).statesEntered).toContain('Target failed');
    expect((failed as ExecutionFailed).statesEntered).toContain('Target replicated');
  });

  it('a failing batch fails its target through the batch Map and alerts once', async () => {
    const alerts: unknown[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) =>
            plan((input as { target: string }).target, [batch(1)]),
          ),
          'replication/copy-batch': (input) => {
            if ((input as { target: string }).target === 'dr-aws')
              throw failure('InvalidHandlerInputError', 'invalid input to replication/copy-batch at batch');
            return batchResult(2);
          },
          'replication/copy-manifests': manifestsStub,
          'replication/copy-large': () => ({}),
        },
        states: { 'Alert replication failure': (input) => alerts.push(input) },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect(alerts).toEqual([
      expect.objectContaining({
        Message: 'Replication to target dr-aws failed: invalid input to replication/copy-batch at batch',
      }),
    ]);
    expect((failed as ExecutionFailed).statesEntered).toContain('Batch copy failed');
  });

  it('objects that failed their check fail the target with an alert naming them', async () => {
    const alerts: { Message?: string }[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': planFn((input) =>
            plan((input as { target: string }).target, [batch(1)]),
          ),
          'replication/copy-batch': (input) =>
            (input as { target: string }).target === 'b2'
              ? {
                  ...batchResult(1),
                  failed: 1,
                  failedKeys: ['v1/main/wal/x'],
                  oldestFailed: '2026-11-22T00:00:00.000Z',
                }
              : batchResult(2),
          'replication/copy-manifests': manifestsStub,
          'replication/copy-large': () => ({}),
        },
        states: { 'Alert replication failure': (input) => alerts.push(input as { Message?: string }) },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect(alerts.map((a) => a.Message)).toEqual([
      'Replication to target b2 failed: 1 objects failed their size or sha256 check and will be copied again by the next run; of them 0 are trust violations (a target copy with other bytes than ingest, kept and never replaced, or a manifest rejected as untrustworthy); first: ["v1/main/wal/x"]',
    ]);
  });
});

describe('retention', () => {
  const noPruning = {
    target: 'ingest',
    cluster: 'main',
    round: 1,
    dryRun: false,
    keepDays: 30,
    deleteBatches: [],
    deletions: { count: 0, first: [] },
    backupsPruned: 0,
    walPruned: 0,
    more: false,
    kept: [],
    rejected: { count: 0, first: [] },
  };
  it('plans per target and deletes the batches in order, skipping targets with nothing expired', async () => {
    const deleted: string[] = [];
    const run = await runStateMachine(
      pipeline.stateMachine('retention'),
      {
        lambdas: {
          'retention/plan-retention': (input) => {
            const { target } = input as { target: string };
            const expired = target === 'b2';
            return {
              target,
              deleteBatches: expired
                ? [
                    {
                      cluster: 'main',
                      keys: ['v1/main/manifests/a.json', 'v1/main/base/a/base.tar.zst.age'],
                    },
                    { cluster: 'main', keys: ['v1/main/wal/00000001/x'] },
                  ]
                : [],
              keptBackups: 3,
              expiredBackups: expired ? 1 : 0,
              dryRun: false,
              deletions: { count: 0, first: [] },
              locked: { count: 0, first: [] },
              more: false,
              warnings: [],
              rejected: { count: 0, first: [] },
            };
          },
          'retention/plan-ingest-prune': () => noPruning,
          'retention/delete-batch': recordDeletes(deleted),
        },
        states: {
          ...NO_RETENTION_ALERTS,
        },
      },
      {},
    );
    expect(deleted).toEqual([
      'b2:v1/main/manifests/a.json',
      'b2:v1/main/base/a/base.tar.zst.age',
      'b2:v1/main/wal/00000001/x',
    ]);
    expect(run.output).toEqual({
      anyFailed: false,
      ingest: [
        {
          cluster: 'main',
          dryRun: false,
          rounds: 1,
          deleted: 0,
          backups: 0,
          wal: 0,
          more: false,
          kept: [],
          rejected: 0,
        },
      ],
      targets: [
        {
          target: 'dr-aws',
          status: 'ok',
          kept: 3,
          expired: 0,
          dryRun: false,
          deleted: { count: 0, first: [] },
          locked: { count: 0, first: [] },
          more: false,
          rejected: { count: 0, first: [] },
        },
        {
          target: 'b2',
          status: 'ok',
          kept: 3,
          expired: 1,
          dryRun: false,
          deleted: { count: 0, first: [] },
          locked: { count: 0, first: [] },
          more: false,
          rejected: { count: 0, first: [] },
        },
      ],
    });
  });

  it('ingest pruning plans a cluster again while a round is cut, up to MAX_PRUNE_ROUNDS; a dry run plans once', async () => {
    const noTargetDeletes = (input: unknown) => ({
      target: (input as { target: string }).target,
      deleteBatches: [],
      keptBackups: 1,
      expiredBackups: 0,
      dryRun: false,
      deletions: { count: 0, first: [] },
      locked: { count: 0, first: [] },
      more: false,
      warnings: [],
      rejected: { count: 0, first: [] },
    });
    const run = async (input: { dryRun?: boolean }) => {
      const rounds: number[] = [];
      const deleted: string[] = [];
      const execution = await runStateMachine(
        pipeline.stateMachine('retention'),
        {
          lambdas: {
            'retention/plan-retention': noTargetDeletes,
            'retention/plan-ingest-prune': (i) => {
              const round = ((i as { round: number }).round ?? 0) + 1;
              rounds.push(round);
              const dryRun = input.dryRun === true;
              return {
                ...noPruning,
                round,
                dryRun,
                more: true,
                deleteBatches: dryRun ? [] : [{ cluster: 'main', keys: [`v1/main/wal/00000001/${round}`] }],
              };
            },
            'retention/delete-batch': recordDeletes(deleted),
          },
          states: {
            ...NO_RETENTION_ALERTS,
          },
        },
        input,
      );
      return { rounds, deleted, output: execution.output as { ingest: { rounds: number; more: boolean }[] } };
    };
    const real = await run({});
    expect(real.rounds).toEqual(Array.from({ length: MAX_PRUNE_ROUNDS }, (_, i) => i + 1));
    expect(real.deleted).toHaveLength(MAX_PRUNE_ROUNDS);
    expect(real.deleted[0]).toBe('ingest:v1/main/wal/00000001/1');
    expect(real.output.ingest).toEqual([expect.objectContaining({ rounds: MAX_PRUNE_ROUNDS, more: true })]);
    const dry = await run({ dryRun: true });
    expect(dry.rounds).toEqual([1]);
    expect(dry.deleted).toEqual([]);
  });

  it('a planner failure on one target alerts and fails the run after the other target is done', async () => {
    const alerts: unknown[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('retention'),
      {
        lambdas: {
          'retention/plan-retention': (input) => {
            const { target } = input as { target: string };
            if (target === 'dr-aws')
              throw failure('InvalidManifestError', 'manifest x is invalid at objects');
            return {
              target,
              deleteBatches: [],
              keptBackups: 1,
              expiredBackups: 0,
              dryRun: false,
              deletions: { count: 0, first: [] },
              locked: { count: 0, first: [] },
              more: false,
              warnings: [],
              rejected: { count: 0, first: [] },
            };
          },
          'retention/plan-ingest-prune': () => noPruning,
          'retention/delete-batch': () => ({ deleted: 0, locked: [] }),
        },
        states: {
          'Alert retention failure': (input) => alerts.push(input),
          'Alert ingest pruning failure': (input) => alerts.push(input),
        },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('RetentionFailed');
    expect(alerts).toEqual([
      expect.objectContaining({
        Message: 'Retention on target dr-aws failed: manifest x is invalid at objects',
      }),
    ]);
    expect((failed as ExecutionFailed).statesEntered).toContain('Retention applied on target');
  });
});

describe('verification', () => {
  const picked = (pgMajor: number) => ({
    cluster: 'main',
    backupId: '20261122T021500Z-1a2b',
    manifestKey: 'v1/main/manifests/20261122T021500Z-1a2b.json',
    kind: 'base',
    pgMajor,
    runId: '20261122T050000Z-20261122T021500Z-1a2b',
    reportKey: 'verify/main/20261122T050000Z-20261122T021500Z-1a2b.json',
    source: 'ingest',
    repository: 's3://pgkeep-ingest/?region=us-east-1',
    sourceSecretArn: '',
  });

  // A passing run, with the real task (pgkeep verify --from-env) and handlers, is in
  // test/lambdas/verification-pipeline.test.ts; here, the faults a real task cannot produce locally.
  it('a failed restore task is recorded as a failure, alerts, and fails the run', async () => {
    const recorded: unknown[] = [];
    const alerts: unknown[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('verification'),
      {
        lambdas: {
          'verification/pick-backup': () => picked(16),
          'verification/record-result': (input) => {
            recorded.push(input);
            return {
              passed: false,
              summary: 'backup 20261122T021500Z-1a2b: States.TaskFailed: pg_amcheck found corruption',
            };
          },
        },
        states: {
          'Restore on PostgreSQL 16': () => {
            throw failure('States.TaskFailed', 'pg_amcheck found corruption');
          },
          'Restore on PostgreSQL 17': () => {
            throw new Error('wrong major version');
          },
          'Alert verification failure': (input) => alerts.push(input),
        },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('VerificationFailed');
    expect(recorded).toEqual([
      expect.objectContaining({
        backup: picked(16),
        error: expect.objectContaining({ Error: 'States.TaskFailed' }),
      }),
    ]);
    expect(alerts).toEqual([
      expect.objectContaining({
        Message:
          'Restore verification failed: backup 20261122T021500Z-1a2b: States.TaskFailed: pg_amcheck found corruption',
      }),
    ]);
  });

  it('a backup of a major version without an image is a recorded failure, not a silent skip', async () => {
    const recorded: { error?: { Error: string; Cause: string } }[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('verification'),
      {
        lambdas: {
          'verification/pick-backup': () => picked(13),
          'verification/record-result': (input) => {
            recorded.push(input as never);
            return { passed: false, summary: 'unsupported' };
          },
        },
        states: {
          'Restore on PostgreSQL 16': () => ({}),
          'Restore on PostgreSQL 17': () => ({}),
          'Alert verification failure': () => ({}),
        },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('VerificationFailed');
    expect(recorded[0]?.error).toEqual({
      Error: 'UnsupportedMajorVersion',
      Cause: 'no verification image for PostgreSQL 13; add it to verification.postgresMajorVersions',
    });
  });

  it('nothing to verify is a failure that alerts', async () => {
    const alerts: unknown[] = [];
    const failed = await runStateMachine(
      pipeline.stateMachine('verification'),
      {
        lambdas: {
          'verification/pick-backup': () => {
            throw failure(
              'NoBackupToVerifyError',
              'no backup to verify: no manifest under v1/main/manifests/',
            );
          },
          'verification/record-result': (input) => ({
            passed: false,
            summary: (input as { error: { Cause: string } }).error.Cause,
          }),
        },
        states: {
          'Restore on PostgreSQL 16': () => ({}),
          'Restore on PostgreSQL 17': () => ({}),
          'Alert verification failure': (input) => alerts.push(input),
        },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('VerificationFailed');
    expect(alerts).toEqual([
      expect.objectContaining({
        Message: 'Restore verification failed: no backup to verify: no manifest under v1/main/manifests/',
      }),
    ]);
  });
});
