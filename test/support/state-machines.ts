/**
 * The synthesized pipeline, for tests: synthesize the CDK app once, take each state machine's
 * definition out of the template (resolving CloudFormation tokens to fake ARNs), and run it with
 * aws-local-stepfunctions, binding every Task to a local function.
 *
 * Lambda tasks are bound by handler id (`replication/plan-copies`, the `pgkeep:handler` tag on the
 * function, which names lambdas/<id>.ts), so a test can bind the real handler modules or stubs;
 * other tasks (ECS RunTask, SNS Publish) are bound by state name.
 *
 *   const pipeline = synthPipeline(config);
 *   const machine = pipeline.stateMachine('replication');
 *   const run = await runStateMachine(machine, { lambdas: { 'replication/plan-copies': plan, ... },
 *     states: { 'Alert replication failure': alert } }, {});
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { App, type Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { StateMachine } from 'aws-local-stepfunctions';
import { DEFAULT_DEPLOY_CONFIG_PATH, type DeployConfig, parseDeployConfig } from '../../cdk/config.ts';
import { HANDLER_TAG } from '../../cdk/constructs/pipeline-function.ts';
import { addPgkeepStacks, type PgkeepStacks } from '../../cdk/pgkeep-app.ts';
import type { HandlerId } from '../../lambdas/registry.ts';

export const FAKE_ACCOUNT = '123456789012';
export const FAKE_REGION = 'us-east-1';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonValue = Parameters<StateMachine['run']>[0];
type CfnResource = { Type: string; Properties?: Record<string, Json>; DeletionPolicy?: string };
type CfnTemplate = { Resources: Record<string, CfnResource> };

/** The example deploy config, parsed (what `npm run synth` uses). */
export function exampleConfig(): DeployConfig {
  return parseDeployConfig(readFileSync(DEFAULT_DEPLOY_CONFIG_PATH, 'utf8'), DEFAULT_DEPLOY_CONFIG_PATH);
}

/**
 * The pipeline's state machines by what they do: `replicationManifestRuns` is the Express front that
 * a written manifest starts (cdk/constructs/manifest-runs.ts), the others are Standard.
 */
export type MachineName = 'replication' | 'replicationManifestRuns' | 'retention' | 'verification';

/** A synthesized state machine: its construct name and the definition with fake ARNs in place of tokens. */
export interface SynthesizedStateMachine {
  readonly capability: MachineName;
  readonly logicalId: string;
  /** Its fake ARN, what another machine's definition names it by. */
  readonly arn: string;
  readonly definition: AslDefinition;
  /** Lambda ARN in the definition -> handler id (`replication/copy-batch`). */
  readonly handlerOfArn: ReadonlyMap<string, HandlerId>;
}

export interface AslState {
  readonly Type: string;
  readonly Resource?: string;
  readonly Retry?: unknown[];
  readonly Catch?: unknown[];
  readonly ItemProcessor?: AslDefinition;
  readonly Iterator?: AslDefinition;
  readonly Branches?: AslDefinition[];
  readonly [key: string]: unknown;
}

export interface AslDefinition {
  readonly StartAt: string;
  readonly States: Record<string, AslState>;
  readonly [key: string]: unknown;
}

export interface SynthesizedPipeline {
  readonly app: App;
  readonly stacks: PgkeepStacks;
  readonly stateful: Template;
  readonly pipeline: Template;
  stateMachine(capability: MachineName): SynthesizedStateMachine;
  /** Removes the synthesized output directory. */
  dispose(): void;
}

export interface SynthOptions {
  /**
   * Bundle the Lambdas with esbuild as `cdk synth` does (a few seconds). Off, the functions get a
   * placeholder asset: enough for everything but checking the bundles.
   * @default false
   */
  readonly bundle?: boolean;
}

/** Synthesizes both stacks for `config` into a temporary directory. */
export function synthPipeline(
  config: DeployConfig = exampleConfig(),
  options: SynthOptions = {},
): SynthesizedPipeline {
  const outdir = mkdtempSync(path.join(tmpdir(), 'pgkeep-cdk-'));
  const app = new App({
    outdir,
    context: options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] },
  });
  const stacks = addPgkeepStacks(app, config);
  const stateful = Template.fromStack(stacks.stateful);
  const pipeline = Template.fromStack(stacks.pipeline);
  return {
    app,
    stacks,
    stateful,
    pipeline,
    stateMachine: (capability) =>
      stateMachineFromTemplate(pipeline.toJSON() as CfnTemplate, stacks.pipeline, capability),
    dispose: () => rmSync(outdir, { recursive: true, force: true }),
  };
}

/** A fake but well-formed ARN or name for what a `Ref` / `Fn::GetAtt` of `logicalId` would give. */
function fakeValue(template: CfnTemplate, logicalId: string, attribute: string | undefined): string {
  const type = template.Resources[logicalId]?.Type;
  const arn = (service: string, resource: string) =>
    `arn:aws:${service}:${FAKE_REGION}:${FAKE_ACCOUNT}:${resource}`;
  switch (type) {
    case 'AWS::Lambda::Function':
      return attribute === 'Arn' ? arn('lambda', `function:${logicalId}`) : logicalId;
    case 'AWS::SNS::Topic':
      return arn('sns', logicalId);
    case 'AWS::ECS::Cluster':
      return attribute === 'Arn' ? arn('ecs', `cluster/${logicalId}`) : logicalId;
    case 'AWS::ECS::TaskDefinition':
      return arn('ecs', `task-definition/${logicalId}:1`);
    case 'AWS::StepFunctions::StateMachine':
      // Ref and Arn both give the ARN; Name the name.
      return attribute === 'Name' ? logicalId : arn('states', `stateMachine:${logicalId}`);
    case 'AWS::IAM::Role':
      return attribute === 'Arn' ? `arn:aws:iam::${FAKE_ACCOUNT}:role/${logicalId}` : logicalId;
    default:
      return attribute ? `${logicalId}.${attribute}` : logicalId.toLowerCase();
  }
}

/** Resolves the intrinsic functions CDK puts into a DefinitionString to plain strings. */
export function resolveIntrinsics(template: CfnTemplate, value: Json): string {
  if (typeof value === 'string') return value;
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new Error(`cannot resolve ${JSON.stringify(value)} to a string`);
  const [fn, args] = Object.entries(value)[0] ?? [];
  switch (fn) {
    case 'Ref': {
      const pseudo: Record<string, string> = {
        'AWS::Partition': 'aws',
        'AWS::Region': FAKE_REGION,
        'AWS::AccountId': FAKE_ACCOUNT,
        'AWS::URLSuffix': 'amazonaws.com',
      };
      return pseudo[args as string] ?? fakeValue(template, args as string, undefined);
    }
    case 'Fn::GetAtt': {
      const [logicalId, attribute] = args as [string, string];
      return fakeValue(template, logicalId, attribute);
    }
    case 'Fn::ImportValue':
      return `imported-${resolveIntrinsics(template, args as Json)}`;
    case 'Fn::Join': {
      const [separator, parts] = args as [string, Json[]];
      return parts.map((part) => resolveIntrinsics(template, part)).join(separator);
    }
    default:
      throw new Error(`unsupported intrinsic ${fn} in a state machine definition`);
  }
}

function stateMachineFromTemplate(
  template: CfnTemplate,
  stack: Stack,
  capability: MachineName,
): SynthesizedStateMachine {
  const entries = Object.entries(template.Resources).filter(
    ([, r]) => r.Type === 'AWS::StepFunctions::StateMachine',
  );
  // `ReplicationStateMachine…`, not `ReplicationManifestRunsStateMachine…`.
  const prefix = `${capability}StateMachine`.toLowerCase();
  const found = entries.find(([logicalId]) => logicalId.toLowerCase().startsWith(prefix));
  if (!found)
    throw new Error(
      `no state machine for "${capability}" in ${stack.stackName}; have ${entries.map(([id]) => id).join(', ')}`,
    );
  const [logicalId, resource] = found;
  const definition = JSON.parse(
    resolveIntrinsics(template, resource.Properties?.DefinitionString as Json),
  ) as AslDefinition;
  const handlerOfArn = new Map<string, HandlerId>();
  for (const [id, r] of Object.entries(template.Resources)) {
    if (r.Type !== 'AWS::Lambda::Function') continue;
    const tags = (r.Properties?.Tags ?? []) as { Key: string; Value: string }[];
    const handler = tags.find((t) => t.Key === HANDLER_TAG)?.Value;
    if (handler) handlerOfArn.set(fakeValue(template, id, 'Arn'), handler as HandlerId);
  }
  return { capability, logicalId, arn: fakeValue(template, logicalId, undefined), definition, handlerOfArn };
}

/** Every state of a definition, including those inside Map and Parallel states, with its name. */
export function allStates(definition: AslDefinition): [string, AslState][] {
  return Object.entries(definition.States).flatMap(([name, state]) => [
    [name, state] as [string, AslState],
    ...[state.ItemProcessor, state.Iterator, ...(state.Branches ?? [])]
      .filter((inner): inner is AslDefinition => inner !== undefined)
      .flatMap(allStates),
  ]);
}

export type LocalHandler = (input: unknown) => unknown;

export interface TaskBindings {
  /** Handler id (`replication/copy-batch`) -> the function to run for every Task invoking it. */
  readonly lambdas?: Readonly<Partial<Record<HandlerId, LocalHandler>>>;
  /** State name -> function, for non-Lambda tasks (ECS RunTask, SNS Publish) or to override one state. */
  readonly states?: Readonly<Record<string, LocalHandler>>;
}

/**
 * aws-local-stepfunctions' `taskResourceLocalHandlers` (keyed by state name) for every Task of the
 * machine. Throws naming the state if a Task has no binding, so a new task cannot go unnoticed.
 */
export function localTaskHandlers(
  machine: SynthesizedStateMachine,
  bindings: TaskBindings,
): Record<string, (input: JsonValue) => Promise<JsonValue>> {
  const handlers: Record<string, (input: JsonValue) => Promise<JsonValue>> = {};
  for (const [name, state] of allStates(machine.definition)) {
    if (state.Type !== 'Task') continue;
    const handlerId = state.Resource ? machine.handlerOfArn.get(state.Resource) : undefined;
    const local = bindings.states?.[name] ?? (handlerId ? bindings.lambdas?.[handlerId] : undefined);
    if (!local)
      throw new Error(
        `task "${name}" (${handlerId ? `lambda ${handlerId}` : state.Resource}) of the ${machine.capability} state machine has no local binding`,
      );
    handlers[name] = async (input) => (await local(input)) as JsonValue;
  }
  return handlers;
}

/** Validates the definition the way aws-local-stepfunctions does (asl-validator, ARNs and paths checked). */
export function loadStateMachine(machine: SynthesizedStateMachine): StateMachine {
  return new StateMachine(machine.definition as never, {
    validationOptions: { checkArn: true, checkPaths: true },
  });
}

/** Step Functions' quota on a state's input or output (and so each Map item and result): 256 KiB of UTF-8 JSON. */
export const STATE_PAYLOAD_LIMIT_BYTES = 256 * 1024;

export interface Execution {
  /** The execution's name (`$$.Execution.Name`): the run id of the decision log. */
  readonly name: string;
  readonly output: unknown;
  /** Names of the states entered, in order (from the execution's event log). */
  readonly statesEntered: string[];
  /** The largest payload the run passed (state input or output, Lambda input or result) and where. */
  readonly largestPayload: { readonly bytes: number; readonly where: string };
  /**
   * What a log of every event with execution data carries: the events (the local runner's, plus the
   * three AWS logs per Task invocation: scheduled, started, succeeded) and the bytes of the data in
   * them (the execution's input and output, every state's input and output, every task's input and result).
   */
  readonly logged: { readonly events: number; readonly dataBytes: number };
}

/**
 * Checks every payload against {@link STATE_PAYLOAD_LIMIT_BYTES}: aws-local-stepfunctions does not,
 * while AWS fails the execution with States.DataLimitExceeded (a terminal error no Catch handles).
 */
class PayloadWatch {
  largest = { bytes: 0, where: '(none)' };
  exceeded: string | undefined;
  private readonly onExceeded: () => void;
  constructor(onExceeded: () => void) {
    this.onExceeded = onExceeded;
  }

  /** Whether `value` fits; the first one that does not is remembered and ends the run. */
  check(where: string, value: unknown): boolean {
    const bytes = Buffer.byteLength(JSON.stringify(value) ?? 'null', 'utf8');
    if (bytes > this.largest.bytes) this.largest = { bytes, where };
    if (bytes <= STATE_PAYLOAD_LIMIT_BYTES) return true;
    if (this.exceeded === undefined) {
      this.exceeded = `the ${where} is ${bytes} bytes, above the ${STATE_PAYLOAD_LIMIT_BYTES}-byte limit of a state's data; pass it by reference`;
      this.onExceeded();
    }
    return false;
  }
}

/** The error of a failed execution: the Fail state's Error and Cause. */
export class ExecutionFailed extends Error {
  override name = 'ExecutionFailed';
  readonly error: string;
  readonly statesEntered: string[];
  constructor(error: string, cause: string, statesEntered: string[]) {
    super(`${error}: ${cause}`);
    this.error = error;
    this.statesEntered = statesEntered;
  }
}

/**
 * Runs the synthesized machine with every Task bound to a local function and no Retry waits.
 * Resolves with the output; rejects with {@link ExecutionFailed} when the execution fails.
 */
export async function runStateMachine(
  machine: SynthesizedStateMachine,
  bindings: TaskBindings,
  input: unknown,
): Promise<Execution> {
  const stateMachine = loadStateMachine(machine);
  const retryIntervalOverrides: Record<string, number> = {};
  for (const [name, state] of allStates(machine.definition))
    if (state.Retry) retryIntervalOverrides[name] = 0;
  const name = `local-${randomUUID()}`;
  let abort = () => {};
  const watch = new PayloadWatch(() => abort());
  const logged = { events: 0, dataBytes: 0 };
  const log = (...values: unknown[]) => {
    for (const value of values) logged.dataBytes += Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
  };
  // Every Lambda's input (after Parameters) and result, which the event log does not show.
  const handlers = Object.fromEntries(
    Object.entries(localTaskHandlers(machine, bindings)).map(([state, handler]) => [
      state,
      async (value: JsonValue) => {
        if (!watch.check(`input of state "${state}"`, value)) throw new Error('States.DataLimitExceeded');
        logged.events += 3;
        log(value);
        const result = await handler(value);
        log(result);
        if (!watch.check(`result of state "${state}"`, result)) throw new Error('States.DataLimitExceeded');
        return result;
      },
    ]),
  );
  const execution = stateMachine.run(input as never, {
    overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides },
    context: {
      Execution: {
        Id: `arn:aws:states:${FAKE_REGION}:${FAKE_ACCOUNT}:execution:${machine.logicalId}:${name}`,
        Name: name,
      },
    },
  });
  abort = execution.abort;
  const statesEntered: string[] = [];
  const collecting = (async () => {
    for await (const event of execution.eventLogs) {
      const e = event as {
        type: string;
        input?: unknown;
        output?: unknown;
        state?: { name: string; input: unknown; output?: unknown };
      };
      logged.events += 1;
      log(e.input, e.output, e.type === 'StateEntered' ? e.state?.input : e.state?.output);
      if (e.type === 'StateEntered' && e.state) {
        statesEntered.push(e.state.name);
        // Inside a Map, the first state's input is the item (after ItemSelector).
        watch.check(`input of state "${e.state.name}"`, e.state.input);
      }
      // A Map's output holds its results.
      if (e.type === 'StateExited' && e.state)
        watch.check(`output of state "${e.state.name}"`, e.state.output);
    }
  })();
  const limitExceeded = () =>
    new ExecutionFailed('States.DataLimitExceeded', watch.exceeded as string, statesEntered);
  try {
    const output = await execution.result;
    await collecting;
    if (watch.exceeded !== undefined) throw limitExceeded();
    return { name, output, statesEntered, largestPayload: watch.largest, logged };
  } catch (error) {
    await collecting.catch(() => {});
    if (error instanceof ExecutionFailed) throw error;
    if (watch.exceeded !== undefined) throw limitExceeded();
    const cause = (error as { cause?: { name?: string; message?: string } }).cause;
    throw new ExecutionFailed(cause?.name ?? 'Error', cause?.message ?? String(error), statesEntered);
  }
}
