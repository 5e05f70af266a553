/**
 * A local stand-in for the Step Functions API (AWS JSON 1.0: StartExecution, DescribeExecution,
 * ListExecutions) on 127.0.0.1, whose executions are real runs of synthesized state machines by
 * aws-local-stepfunctions with local task bindings (state-machines.ts). The real @aws-sdk/client-sfn
 * reaches it through AWS_ENDPOINT_URL_SFN.
 */
import { AwsFault, type AwsJsonServer, startAwsJsonServer } from './aws-json-server.ts';
import {
  ExecutionFailed,
  runStateMachine,
  type SynthesizedStateMachine,
  type TaskBindings,
} from './state-machines.ts';

interface Execution {
  executionArn: string;
  stateMachineArn: string;
  name: string;
  status: 'RUNNING' | 'SUCCEEDED' | 'FAILED';
  startDate: number;
  stopDate?: number;
  input: string;
  output?: string;
  error?: string;
  cause?: string;
  done: Promise<void>;
}

export interface LocalStepFunctions extends AwsJsonServer {
  /** Resolves when every execution started so far has ended. */
  settled(): Promise<void>;
}

/** `machines`: state machine ARN -> the synthesized machine and its bindings (undefined: exists, never runs). */
export async function startLocalStepFunctions(
  machines: ReadonlyMap<string, { machine: SynthesizedStateMachine; bindings: TaskBindings } | undefined>,
): Promise<LocalStepFunctions> {
  const executions: Execution[] = [];
  const seconds = () => Date.now() / 1000;
  const server = await startAwsJsonServer(async ({ target, body }) => {
    const operation = target.replace(/^AWSStepFunctions\./, '');
    if (operation === 'StartExecution') {
      const stateMachineArn = String(body.stateMachineArn);
      if (!machines.has(stateMachineArn))
        throw new AwsFault('StateMachineDoesNotExist', `State Machine Does Not Exist: '${stateMachineArn}'`);
      const entry = machines.get(stateMachineArn);
      if (!entry) throw new AwsFault('InvalidArn', `${stateMachineArn} has no local bindings`);
      const name = String(body.name ?? `local-${executions.length}`);
      const executionArn = `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
      if (executions.some((e) => e.executionArn === executionArn))
        throw new AwsFault('ExecutionAlreadyExists', `Execution Already Exists: '${executionArn}'`);
      const input = String(body.input ?? '{}');
      const execution: Execution = {
        executionArn,
        stateMachineArn,
        name,
        status: 'RUNNING',
        startDate: seconds(),
        input,
        done: Promise.resolve(),
      };
      execution.done = runStateMachine(entry.machine, entry.bindings, JSON.parse(input)).then(
        (run) => {
          Object.assign(execution, {
            status: 'SUCCEEDED',
            output: JSON.stringify(run.output),
            stopDate: seconds(),
          });
        },
        (error: unknown) => {
          const failed = error as ExecutionFailed;
          const cause =
            error instanceof ExecutionFailed ? failed.message.slice(failed.error.length + 2) : String(error);
          Object.assign(execution, {
            status: 'FAILED',
            error: failed.error ?? 'Error',
            cause,
            stopDate: seconds(),
          });
        },
      );
      executions.push(execution);
      return { executionArn, startDate: execution.startDate };
    }
    if (operation === 'DescribeExecution') {
      const e = executions.find((x) => x.executionArn === body.executionArn);
      if (!e)
        throw new AwsFault(
          'ExecutionDoesNotExist',
          `Execution Does Not Exist: '${String(body.executionArn)}'`,
        );
      const { done: _done, ...shown } = e;
      return shown;
    }
    if (operation === 'ListExecutions') {
      const max = Number(body.maxResults ?? 100) || 100;
      const list = executions
        .filter((e) => e.stateMachineArn === body.stateMachineArn)
        .sort((a, b) => b.startDate - a.startDate)
        .slice(0, max)
        .map(({ executionArn, stateMachineArn, name, status, startDate, stopDate }) => ({
          executionArn,
          stateMachineArn,
          name,
          status,
          startDate,
          ...(stopDate ? { stopDate } : {}),
        }));
      return { executions: list };
    }
    throw new AwsFault(
      'UnknownOperationException',
      `${target} is not implemented by the local Step Functions`,
    );
  }, 'application/x-amz-json-1.0');
  return { ...server, settled: async () => void (await Promise.all(executions.map((e) => e.done))) };
}
