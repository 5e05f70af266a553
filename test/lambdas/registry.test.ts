// The handler registry is the one contract between the CDK constructs, the deployed handlers and
// the local bindings: every id names a module exporting `handler`, has its task, and is deployed.
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { HANDLER_TAG } from '../../cdk/constructs/pipeline-function.ts';
import type { LocationFactory } from '../../lambdas/lib/locations.ts';
import { HANDLER_IDS, HANDLERS, handlerEntry } from '../../lambdas/registry.ts';
import { TASKS } from '../../lambdas/tasks.ts';
import { localPipelineEnv, localTask } from '../support/local-pipeline.ts';
import { synthPipeline } from '../support/state-machines.ts';

describe('the handler registry', () => {
  it.each(HANDLER_IDS)('%s: its entry exists and exports handler; its task has the same id', async (id) => {
    const entry = handlerEntry(id);
    expect(existsSync(entry), entry).toBe(true);
    const module = (await import(entry)) as { handler?: unknown };
    expect(typeof module.handler).toBe('function');
    expect(TASKS[id].id).toBe(id);
    expect(HANDLERS[id].input).toBeDefined();
  });

  const synth = synthPipeline();
  afterAll(() => synth.dispose());

  it('every deployed function is tagged with a registered handler, and every handler is deployed', () => {
    const functions = synth.pipeline.findResources('AWS::Lambda::Function');
    const tagged = Object.values(functions)
      .map(
        (f) =>
          (f.Properties.Tags as { Key: string; Value: string }[] | undefined)?.find(
            (t) => t.Key === HANDLER_TAG,
          )?.Value,
      )
      .filter((v): v is string => v !== undefined);
    expect(new Set(tagged)).toEqual(new Set(HANDLER_IDS));
  });

  it('every Lambda task of the three state machines invokes a registered handler', () => {
    for (const capability of ['replication', 'retention', 'verification'] as const) {
      const machine = synth.stateMachine(capability);
      expect(machine.handlerOfArn.size).toBeGreaterThan(0);
      for (const id of machine.handlerOfArn.values()) expect(HANDLER_IDS).toContain(id);
    }
  });
});

describe('a local binding parses its input as the deployed handler does', () => {
  // No bucket is reached: parsing comes first, so a factory that fails proves it.
  const locations: LocationFactory = {
    ingest: async () => {
      throw new Error('no bucket should be opened');
    },
    target: async () => {
      throw new Error('no bucket should be opened');
    },
  };
  const deps = { env: localPipelineEnv(['main'], { drAws: 'dr', b2: 'b2' }), locations, policies: {} };

  it('rejects a payload the schema refuses, naming the handler and the field', async () => {
    await expect(
      localTask(
        'replication/copy-batch',
        deps,
      )({ target: 'b2', batch: { cluster: 'main', firstKey: 'v1/main/a' } }),
    ).rejects.toThrow('invalid input to replication/copy-batch at batch.lastKey: ');
    await expect(localTask('retention/delete-batch', deps)({ target: 'b2' })).rejects.toMatchObject({
      name: 'InvalidHandlerInputError',
    });
  });

  it('passes a valid payload on to the work (which then opens its buckets)', async () => {
    await expect(
      localTask(
        'replication/copy-batch',
        deps,
      )({
        target: 'b2',
        batch: { cluster: 'main', firstKey: 'v1/main/a', lastKey: 'v1/main/b', count: 2 },
      }),
    ).rejects.toThrow('no bucket should be opened');
  });
});
