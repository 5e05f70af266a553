/**
 * The pipeline's state machines seen from an operator's terminal: their last runs, starting a
 * verification run, following it to the end. Talks to Step Functions through {@link StepFunctionsApi}
 * (sfn-api.ts has the real one, @aws-sdk/client-sfn); never prints, never exits.
 */
import { manifestRunsStateMachineName, stateMachineLogGroupName } from '../../core/pipeline-names.ts';

export const CAPABILITIES = ['replication', 'retention', 'verification'] as const;
export type Capability = (typeof CAPABILITIES)[number];

export type ExecutionStatus =
  | 'RUNNING'
  | 'SUCCEEDED'
  | 'FAILED'
  | 'TIMED_OUT'
  | 'ABORTED'
  | 'PENDING_REDRIVE';

export interface ExecutionDetail {
  readonly executionArn: string;
  readonly name: string;
  readonly status: ExecutionStatus;
  readonly startDate: Date;
  readonly stopDate?: Date;
  readonly output?: string;
  readonly error?: string;
  readonly cause?: string;
}

/** The three Step Functions operations the CLI needs. */
export interface StepFunctionsApi {
  listExecutions(stateMachineArn: string, maxResults: number): Promise<{ executionArn: string }[]>;
  describeExecution(executionArn: string): Promise<ExecutionDetail>;
  startExecution(stateMachineArn: string, name: string, input: string): Promise<{ executionArn: string }>;
}

export interface RunSummary extends ExecutionDetail {
  readonly capability: Capability;
  /** One line: the run's own summary (verification), the per-target statuses, or its error. */
  readonly summary: string;
  readonly consoleUrl: string;
}

/** The region of a state machine or execution ARN. */
export function regionOfArn(arn: string): string {
  const region = arn.split(':')[3];
  if (!region || !arn.startsWith('arn:'))
    throw new Error(`"${arn}" is not a Step Functions ARN: use the stack outputs (…StateMachineArn)`);
  return region;
}

/** The Step Functions console page of one execution. */
export function consoleUrl(executionArn: string): string {
  const region = regionOfArn(executionArn);
  return `https://${region}.console.aws.amazon.com/states/home?region=${region}#/v2/executions/details/${encodeURIComponent(executionArn)}`;
}

/** What a run's output says, in one line: verification's summary, each target's status, or the error. */
export function summarize(detail: ExecutionDetail): string {
  if (detail.status === 'RUNNING') return 'running';
  if (detail.error) return `${detail.error}: ${detail.cause ?? ''}`.trim().slice(0, 300);
  let output: unknown;
  try {
    output = detail.output ? JSON.parse(detail.output) : undefined;
  } catch {
    return detail.output?.slice(0, 300) ?? '';
  }
  const o = output as
    | { result?: { summary?: string }; targets?: { target?: string; status?: string }[] }
    | undefined;
  if (o?.result?.summary) return o.result.summary.slice(0, 300);
  if (Array.isArray(o?.targets)) return o.targets.map((t) => `${t.target}: ${t.status}`).join(', ');
  return JSON.stringify(output ?? null).slice(0, 300);
}

/**
 * Where runs started by a manifest are, which {@link lastRuns} cannot list: they are executions of
 * an Express machine beside the replication one, and Step Functions keeps no history of those, only
 * the log group they write every event to.
 */
export function manifestRunsNote(replicationStateMachineArn: string): string {
  regionOfArn(replicationStateMachineArn);
  const name = replicationStateMachineArn.split(':')[6];
  if (!name)
    throw new Error(
      `"${replicationStateMachineArn}" is not a state machine ARN: use the stack output ReplicationStateMachineArn`,
    );
  const logGroup = stateMachineLogGroupName(manifestRunsStateMachineName(name));
  return `runs started by a manifest are Express executions, not listed here: read them in CloudWatch Logs, log group ${logGroup}`;
}

/** The last `limit` runs of each configured state machine, newest first. */
export async function lastRuns(
  api: StepFunctionsApi,
  machines: Partial<Record<Capability, string>>,
  limit: number,
): Promise<RunSummary[]> {
  const runs: RunSummary[] = [];
  for (const capability of CAPABILITIES) {
    const arn = machines[capability];
    if (!arn) continue;
    for (const { executionArn } of await api.listExecutions(arn, limit)) {
      const detail = await api.describeExecution(executionArn);
      runs.push({ ...detail, capability, summary: summarize(detail), consoleUrl: consoleUrl(executionArn) });
    }
  }
  return runs;
}

export interface VerificationRequest {
  readonly cluster?: string;
  readonly backupId?: string;
  readonly source?: string;
}

/** Starts a verification run (the execution input pick-backup reads); resolves to its ARN. */
export async function startVerification(
  api: StepFunctionsApi,
  stateMachineArn: string,
  request: VerificationRequest,
  now: Date = new Date(),
): Promise<string> {
  const input = { trigger: 'cli', ...request };
  const name = `cli-${now.toISOString().replace(/[-:.]/g, '')}`;
  return (await api.startExecution(stateMachineArn, name, JSON.stringify(input))).executionArn;
}

/** Polls the run until it is no longer RUNNING; `onPoll` sees each state. */
export async function waitForRun(
  api: StepFunctionsApi,
  executionArn: string,
  options: { intervalMs?: number; signal?: AbortSignal; onPoll?: (detail: ExecutionDetail) => void } = {},
): Promise<ExecutionDetail> {
  for (;;) {
    const detail = await api.describeExecution(executionArn);
    options.onPoll?.(detail);
    if (detail.status !== 'RUNNING') return detail;
    options.signal?.throwIfAborted();
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 5_000));
  }
}
