// The synthesized state machine definitions validate and run in aws-local-stepfunctions, with
// every Task bound to a local function: what the console shows is what these runs walk through.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

  it('plans, copies every batch and the manifests of every target, and succeeds', async () => {
    const copied: string[] = [];
    const manifests: string[] = [];
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': (input) => {
            const { target } = input as { target: string };
            return {
              target,
              batches: [batch(1), batch(2)],
              manifestKeys: ['v1/main/manifests/20261122T021500Z-1a2b.json'],
              objectCount: 4,
              more: false,
            };
          },
          'replication/copy-batch': (input) => {
            const { target, batch } = input as { target: string; batch: { firstKey: string } };
            copied.push(`${target}:${batch.firstKey}`);
            return { copied: 2, bytes: 20, skipped: 0 };
          },
          'replication/copy-manifests': (input) => {
            const { target, manifestKeys } = input as { target: string; manifestKeys: string[] };
            manifests.push(...manifestKeys.map((k) => `${target}:${k}`));
            return { copied: manifestKeys.length, waiting: [] };
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
    expect(run.output).toEqual({
      anyFailed: false,
      targets: [
        { target: 'dr-aws', status: 'ok', objectsCopied: 4, manifestsCopied: 1, more: false },
        { target: 'b2', status: 'ok', objectsCopied: 4, manifestsCopied: 1, more: false },
      ],
    });
    expect(run.statesEntered).toEqual(
      expect.arrayContaining([
        'Load targets',
        'Replicate to each target',
        'List objects missing on target',
        'Copy batch to target',
        'Copy and verify manifests',
        'Replication complete',
      ]),
    );
  });

  it('keeps planning and copying while the plan says there is more, then finishes the target', async () => {
    const plans: Record<string, number> = {};
    const run = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': (input) => {
            const { target } = input as { target: string };
            plans[target] = (plans[target] ?? 0) + 1;
            const more = plans[target] < 3;
            return {
              target,
              batches: more ? [batch(plans[target])] : [],
              manifestKeys: [],
              objectCount: more ? 2 : 0,
              more,
            };
          },
          'replication/copy-batch': () => ({ copied: 2, bytes: 20, skipped: 0 }),
          'replication/copy-manifests': () => ({ copied: 0, waiting: [] }),
        },
        states: { 'Alert replication failure': () => ({}) },
      },
      {},
    );
    expect(plans).toEqual({ 'dr-aws': 3, b2: 3 });
    expect(run.statesEntered.filter((s) => s === 'Copy batch to target')).toHaveLength(4);
    expect(run.output).toMatchObject({ anyFailed: false });
  });

  it('one target down fails only its branch: it alerts, the other target is replicated, the run fails', async () => {
    const alerts: unknown[] = [];
    const copiedTargets = new Set<string>();
    const attempts: Record<string, number> = {};
    const failed = await runStateMachine(
      pipeline.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': (input) => {
            const { target } = input as { target: string };
            attempts[target] = (attempts[target] ?? 0) + 1;
            if (target === 'b2')
              throw failure('StorageUnavailableError', 'b2 endpoint refused the connection');
            return { target, batches: [batch(1)], manifestKeys: [], objectCount: 2, more: false };
          },
          'replication/copy-batch': (input) => {
            copiedTargets.add((input as { target: string }).target);
            return { copied: 2, bytes: 20, skipped: 0 };
          },
          'replication/copy-manifests': () => ({ copied: 0, waiting: [] }),
        },
        states: { 'Alert replication failure': (input) => alerts.push(input) },
      },
      {},
    ).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ExecutionFailed);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect([...copiedTargets]).toEqual(['dr-aws']);
    // The transient error was retried (MaxAttempts 3: four attempts) before the branch gave up.
    expect(attempts.b2).toBe(4);
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
          'replication/plan-copies': (input) => {
            const { target } = input as { target: string };
            return { target, batches: [batch(1)], manifestKeys: [], objectCount: 2, more: false };
          },
          'replication/copy-batch': (input) => {
            if ((input as { target: string }).target === 'dr-aws')
              throw failure('CopyMismatchError', 'copy of v1/main/wal/x has 3 bytes, ingest has 4');
            return { copied: 2, bytes: 20, skipped: 0 };
          },
          'replication/copy-manifests': () => ({ copied: 0, waiting: [] }),
        },
        states: { 'Alert replication failure': (input) => alerts.push(input) },
      },
      {},
    ).catch((error: unknown) => error);
    expect((failed as ExecutionFailed).error).toBe('ReplicationFailed');
    expect(alerts).toEqual([
      expect.objectContaining({
        Message: 'Replication to target dr-aws failed: copy of v1/main/wal/x has 3 bytes, ingest has 4',
      }),
    ]);
    expect((failed as ExecutionFailed).statesEntered).toContain('Batch copy failed');
  });
});

describe('retention', () => {
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
                    { keys: ['v1/main/manifests/a.json', 'v1/main/base/a/base.tar.zst.age'] },
                    { keys: ['v1/main/wal/00000001/x'] },
                  ]
                : [],
              keptBackups: 3,
              expiredBackups: expired ? 1 : 0,
              lockedObjects: 0,
              more: false,
              warnings: [],
            };
          },
          'retention/delete-batch': (input) => {
            const { target, batch } = input as { target: string; batch: { keys: string[] } };
            deleted.push(...batch.keys.map((k) => `${target}:${k}`));
            return { deleted: batch.keys.length, locked: [] };
          },
        },
        states: {
          'Alert retention failure': () => {
            throw new Error('no alert expected');
          },
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
      targets: [
        { target: 'dr-aws', status: 'ok', kept: 3, expired: 0 },
        { target: 'b2', status: 'ok', kept: 3, expired: 1 },
      ],
    });
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
              lockedObjects: 0,
              more: false,
              warnings: [],
            };
          },
          'retention/delete-batch': () => ({ deleted: 0, locked: [] }),
        },
        states: { 'Alert retention failure': (input) => alerts.push(input) },
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
    reportKey: 'v1/main/verify/20261122T050000Z-20261122T021500Z-1a2b.json',
  });

  it('restores on the Fargate task of the backup major version and succeeds when the report passes', async () => {
    const tasks: unknown[] = [];
    const run = await runStateMachine(
      pipeline.stateMachine('verification'),
      {
        lambdas: {
          'verification/pick-backup': () => picked(17),
          'verification/record-result': (input) => {
            expect(input).not.toHaveProperty('error');
            return { passed: true, summary: 'restore verified', reportKey: picked(17).reportKey };
          },
        },
        states: {
          'Restore on PostgreSQL 16': () => {
            throw new Error('wrong major version');
          },
          'Restore on PostgreSQL 17': (input) => {
            tasks.push(input);
            return { StopCode: 'EssentialContainerExited' };
          },
          'Alert verification failure': () => {
            throw new Error('no alert expected');
          },
        },
      },
      { trigger: 'schedule' },
    );
    expect(tasks).toHaveLength(1);
    expect(run.statesEntered).toEqual([
      'Pick backup to verify',
      'Which PostgreSQL major version?',
      'Restore on PostgreSQL 17',
      'Record verification result',
      'Backup verified?',
      'Backup verified',
    ]);
    expect(run.output).toMatchObject({ backup: picked(17), result: { passed: true } });
  });

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
