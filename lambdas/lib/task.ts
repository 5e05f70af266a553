/**
 * One pipeline task: a handler id from the registry and its work. The deployed Lambda handler and
 * the local bindings (tests, the demo, the soak) both go through {@link invokeTask}, so the input
 * is parsed by the same schema, the decision log names the same run, handler and target, and
 * transient failures carry the same error name either way; only where the settings come from differs.
 */
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { mapTransient } from '../../storage/failure.ts';
import { type HandlerId, type HandlerInput, parseHandlerInput } from '../registry.ts';
import { readPolicies } from './backups.ts';
import { lambdaDefaults } from './defaults.ts';
import type { Location, LocationFactory } from './locations.ts';
import { runIdOf, withRunLog } from './log.ts';
import type { PipelineEnv } from './pipeline-env.ts';

/** What a task's work gets besides its input. */
export interface TaskDeps {
  readonly env: PipelineEnv;
  readonly locations: LocationFactory;
  /** The targets' retention policies by target name (what they drop is never copied). */
  readonly policies: Readonly<Record<string, RetentionPolicy>>;
  /** The time a run plans against. @default the clock at each invocation */
  readonly now?: () => Date;
  /** Whether a target object is under Object Lock. @default HeadObject (retention's planner) */
  readonly lockOf?: (location: Location, key: string, now: Date) => Promise<boolean>;
  /** Where the decision log's lines go (lambdas/lib/log.ts). @default stdout */
  readonly logWrite?: (line: string) => void;
}

/** What a task uses of the Lambda context: the request id, the run id when the payload has none. */
export interface InvocationContext {
  readonly awsRequestId?: string;
}

export interface Task<I extends HandlerId, O> {
  readonly id: I;
  /** The work, given the parsed input. */
  readonly run: (input: HandlerInput<I>, deps: TaskDeps) => Promise<O>;
  /** What only the deployed handler does with the result (metrics as EMF log lines). */
  publish?(output: O, input: HandlerInput<I>, env: PipelineEnv): void;
}

/** Declares a task (typed by its registry id). */
export function defineTask<I extends HandlerId, O>(task: Task<I, O>): Task<I, O> {
  return task;
}

async function parseAndRun<I extends HandlerId, O>(
  task: Task<I, O>,
  input: unknown,
  deps: TaskDeps,
  context: InvocationContext = {},
): Promise<{ input: HandlerInput<I>; output: O }> {
  const parsed = parseHandlerInput(task.id, input);
  const target = (parsed as { target?: unknown } | undefined)?.target;
  const run = {
    run: runIdOf(input) ?? context.awsRequestId ?? 'local',
    handler: task.id,
    ...(typeof target === 'string' ? { target } : {}),
    write: deps.logWrite ?? ((line: string) => process.stdout.write(line)),
  };
  const output = await withRunLog(run, () => mapTransient(() => task.run(parsed, deps)));
  return { input: parsed, output };
}

/**
 * Parses `input` by the task's schema, then runs it; a transient failure comes out as a
 * StorageUnavailableError, the name the state machines' Retry matches.
 */
export async function invokeTask<I extends HandlerId, O>(
  task: Task<I, O>,
  input: unknown,
  deps: TaskDeps,
  context?: InvocationContext,
): Promise<O> {
  return (await parseAndRun(task, input, deps, context)).output;
}

/** The settings a handler reads in Lambda: the environment, once per cold start. */
function lambdaDeps(): TaskDeps {
  const { env, locations } = lambdaDefaults();
  return {
    env,
    locations,
    // Read when a task asks: not every function is given the policies.
    get policies() {
      return readPolicies();
    },
  };
}

/** The Lambda `handler` export of a task. */
export function lambdaHandler<I extends HandlerId, O>(
  task: Task<I, O>,
): (input: unknown, context?: InvocationContext) => Promise<O> {
  return async (input, context) => {
    const deps = lambdaDeps();
    const run = await parseAndRun(task, input, deps, context);
    task.publish?.(run.output, run.input, deps.env);
    return run.output;
  };
}
