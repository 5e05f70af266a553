import { ConfigError, loadConfig } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import {
  CAPABILITIES,
  consoleUrl,
  type ExecutionDetail,
  lastRuns,
  manifestRunsNote,
  regionOfArn,
  type StepFunctionsApi,
  startVerification,
  summarize,
  waitForRun,
} from '../pipeline/runs.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';

const ENV_OF = {
  replication: 'PGKEEP_PIPELINE_REPLICATION',
  retention: 'PGKEEP_PIPELINE_RETENTION',
  verification: 'PGKEEP_PIPELINE_VERIFICATION',
} as const;

async function api(anyArn: string): Promise<StepFunctionsApi> {
  return (await import('../pipeline/sfn-api.ts')).awsStepFunctions(regionOfArn(anyArn));
}

function line(detail: ExecutionDetail & { capability?: string }): string {
  const when = detail.startDate.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return `${(detail.capability ?? '').padEnd(12)} ${detail.name.padEnd(40)} ${when}  ${detail.status.padEnd(9)} ${summarize(detail)}\n  ${consoleUrl(detail.executionArn)}\n`;
}

export const pipeline: Command = {
  summary: 'show the cloud pipeline runs, or start a verification run',
  usage: `pgkeep pipeline status [--limit N]
pgkeep pipeline run verification [--cluster C] [--backup ID] [--source NAME] [--wait]

status: the last runs (default 3) of the replication, retention and verification state machines:
name, start, status, the output summary and a link to the console. Replication runs started by a
manifest are Express executions, which Step Functions does not list: status names the log group
they are in (the stack output ReplicationManifestRunsLogGroup).
run verification: starts a restore verification (default: the cluster and source verified longest
ago, the newest backup); with --wait, follows it to the end: exit 0 verified, 7 not verified.
The state machine ARNs come from the config's pipeline section (the stack outputs
ReplicationStateMachineArn, RetentionStateMachineArn, VerificationStateMachineArn) or
PGKEEP_PIPELINE_REPLICATION / _RETENTION / _VERIFICATION; AWS credentials from the SDK's chain.`,
  async run(context) {
    const { values, positionals } = parseCommandArgs(
      context.args,
      {
        limit: { type: 'string', default: '3' },
        cluster: { type: 'string' },
        backup: { type: 'string' },
        source: { type: 'string' },
        wait: { type: 'boolean', default: false },
      },
      2,
    );
    const config = await loadConfig({ configPath: context.configPath, env: context.env });
    const machines = config.pipeline;
    const [action, what] = positionals;
    if (action === 'status') {
      const limit = Number(values.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100)
        throw new UsageError(`--limit "${values.limit}" is not a number from 1 to 100`);
      const first = CAPABILITIES.map((c) => machines[c]).find((arn) => arn !== undefined);
      if (!first)
        throw new ConfigError(
          `no state machine configured: set pipeline.replication, pipeline.retention and pipeline.verification in the config (or ${Object.values(ENV_OF).join(', ')}) to the stack outputs`,
        );
      const runs = await lastRuns(await api(first), machines, limit);
      if (runs.length === 0) context.stdout.write('no runs yet\n');
      for (const run of runs) context.stdout.write(line(run));
      if (machines.replication) context.stdout.write(`note: ${manifestRunsNote(machines.replication)}\n`);
      return ExitCode.ok;
    }
    if (action === 'run' && what === 'verification') {
      const arn = machines.verification;
      if (!arn)
        throw new ConfigError(
          `pipeline.verification is not set: put the stack output VerificationStateMachineArn in the config (or ${ENV_OF.verification})`,
        );
      const sfn = await api(arn);
      const executionArn = await startVerification(sfn, arn, {
        ...(values.cluster !== undefined ? { cluster: values.cluster } : {}),
        ...(values.backup !== undefined ? { backupId: values.backup } : {}),
        ...(values.source !== undefined ? { source: values.source } : {}),
      });
      context.stdout.write(`started ${executionArn}\n  ${consoleUrl(executionArn)}\n`);
      if (!values.wait) return ExitCode.ok;
      let last = '';
      const detail = await waitForRun(sfn, executionArn, {
        intervalMs: Number(context.env.PGKEEP_PIPELINE_POLL_MS) || 5_000,
        onPoll: (d) => {
          if (d.status !== last && context.interactive)
            context.stderr.write(`pgkeep pipeline: ${d.status.toLowerCase()}\n`);
          last = d.status;
        },
      });
      context.stdout.write(line({ ...detail, capability: 'verification' }));
      return detail.status === 'SUCCEEDED' ? 0 : 7;
    }
    throw new UsageError(
      `unknown pipeline action "${[action, what].filter(Boolean).join(' ') || '(none)'}": use "status" or "run verification"`,
    );
  },
};
