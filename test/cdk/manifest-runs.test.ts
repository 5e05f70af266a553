// The Express front of runs started by a manifest, as synthesized: what starts it, what it may do,
// where its runs are seen, and that its steps fit in an Express run's 5 minutes.
import type { Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { worstCaseRunSeconds } from '../../cdk/constructs/manifest-runs.ts';
import { manifestRunsStateMachineName, stateMachineLogGroupName } from '../../core/pipeline-names.ts';
import {
  allStates,
  exampleConfig,
  loadStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

type Statement = { Effect: string; Action: string | string[]; Resource: unknown };
type Resource = { Type: string; Properties: Record<string, unknown> };

const config = exampleConfig();
let synth: SynthesizedPipeline;
let pipeline: Template;
const resources = (type: string) => Object.entries(pipeline.findResources(type)) as [string, Resource][];
const logicalIdOf = (prefix: string) => {
  const found = resources('AWS::StepFunctions::StateMachine').find(([id]) => id.startsWith(prefix));
  if (!found) throw new Error(`no state machine ${prefix}`);
  return found;
};

beforeAll(() => {
  synth = synthPipeline(config);
  pipeline = synth.pipeline;
});
afterAll(() => synth?.dispose());

describe('the Express front of manifest runs', () => {
  it('is what the ManifestWritten rule starts, with the manifest key; every schedule starts the Standard machine', () => {
    const [front] = logicalIdOf('ReplicationManifestRunsStateMachine');
    const [standard] = logicalIdOf('ReplicationStateMachine');
    const [[, rule]] = resources('AWS::Events::Rule') as [[string, Resource]];
    const [target] = rule.Properties.Targets as {
      Arn: { Ref: string };
      InputTransformer: { InputTemplate: string };
    }[];
    expect(target?.Arn).toEqual({ Ref: front });
    expect(target?.InputTransformer.InputTemplate).toBe('{"trigger":"manifest","key":<detail-object-key>}');
    const replicationSchedules = resources('AWS::Scheduler::Schedule').filter(([, s]) =>
      JSON.stringify(s.Properties.Target).includes('Replication'),
    );
    // Scheduled, verify and reconcile runs: each one a Standard execution, kept and shown in the console.
    expect(replicationSchedules).toHaveLength(3);
    for (const [id, schedule] of replicationSchedules)
      expect((schedule.Properties.Target as { Arn: unknown }).Arn, id).toEqual({ Ref: standard });
  });

  it('is an Express machine that logs every event with its data to a named log group with a retention', () => {
    const [, machine] = logicalIdOf('ReplicationManifestRunsStateMachine');
    expect(machine.Properties.StateMachineType).toBe('EXPRESS');
    const logging = machine.Properties.LoggingConfiguration as {
      Level: string;
      IncludeExecutionData: boolean;
      Destinations: { CloudWatchLogsLogGroup: { LogGroupArn: { 'Fn::GetAtt': [string, string] } } }[];
    };
    expect(logging.Level).toBe('ALL');
    expect(logging.IncludeExecutionData).toBe(true);
    const groupId = logging.Destinations[0]?.CloudWatchLogsLogGroup.LogGroupArn['Fn::GetAtt'][0] as string;
    const group = pipeline.toJSON().Resources[groupId] as Resource;
    expect(group.Properties.RetentionInDays).toBe(30);
    // The name `pgkeep pipeline status` points operators to (derived from the replication machine's).
    expect(group.Properties.LogGroupName).toBe(
      stateMachineLogGroupName(manifestRunsStateMachineName(`${config.name}-replication`)),
    );
    expect(machine.Properties.StateMachineName).toBe(`${config.name}-replication-manifests`);
  });

  it('may invoke its plan function and start the Standard machine, nothing else but logs and traces', () => {
    const [, machine] = logicalIdOf('ReplicationManifestRunsStateMachine');
    const [standard] = logicalIdOf('ReplicationStateMachine');
    const role = (machine.Properties.RoleArn as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    const statements = resources('AWS::IAM::Policy')
      .filter(([, p]) => (p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === role))
      .flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
    const byAction = new Map<string, unknown[]>();
    for (const s of statements)
      for (const action of [s.Action].flat()) byAction.set(action, [s.Resource].flat());
    expect(byAction.get('states:StartExecution')).toEqual([{ Ref: standard }]);
    const [plan] = resources('AWS::Lambda::Function').find(([id]) =>
      id.startsWith('ReplicationManifestRunsPlanCopies'),
    ) as [string, Resource];
    expect(byAction.get('lambda:InvokeFunction')).toEqual([
      { 'Fn::GetAtt': [plan, 'Arn'] },
      { 'Fn::Join': ['', [{ 'Fn::GetAtt': [plan, 'Arn'] }, ':*']] },
    ]);
    for (const [action, targets] of byAction) {
      if (action === 'states:StartExecution' || action === 'lambda:InvokeFunction') continue;
      // Log delivery and X-Ray accept no resource but "*" (acknowledged for cdk-nag).
      expect(action, JSON.stringify(targets)).toMatch(/^(logs|xray):/);
    }
  });

  it('fits in the 5 minutes of an Express run: a first step without retries, shorter than its function', () => {
    const front = synth.stateMachine('replicationManifestRuns');
    expect(() => loadStateMachine(front)).not.toThrow();
    const states: Record<string, unknown> = Object.fromEntries(allStates(front.definition));
    const first = states['Plan and copy every target'] as { TimeoutSeconds: number; Retry?: unknown };
    const handOff = states['Start a standard run'] as {
      TimeoutSeconds: number;
      Retry: { IntervalSeconds: number; MaxAttempts: number; BackoffRate: number }[];
      Catch: unknown[];
    };
    expect(first.Retry).toBeUndefined();
    const [plan] = resources('AWS::Lambda::Function').find(([id]) =>
      id.startsWith('ReplicationManifestRunsPlanCopies'),
    ) as [string, Resource];
    const fnTimeout = pipeline.toJSON().Resources[plan].Properties.Timeout as number;
    expect(fnTimeout).toBeLessThan(first.TimeoutSeconds);
    const [retry] = handOff.Retry;
    const waits = Array.from(
      { length: retry?.MaxAttempts ?? 0 },
      (_, i) => (retry?.IntervalSeconds ?? 0) * (retry?.BackoffRate ?? 1) ** i,
    );
    const worst =
      first.TimeoutSeconds +
      handOff.TimeoutSeconds * (1 + (retry?.MaxAttempts ?? 0)) +
      waits.reduce((a, b) => a + b, 0);
    expect(worst).toBe(worstCaseRunSeconds());
    expect(worst).toBeLessThanOrEqual(300 - 30);
    expect(front.definition.TimeoutSeconds).toBe(300);
    for (const [name] of allStates(front.definition)) expect(name).toMatch(/^[A-Z][a-z]+( [A-Za-z0-9?]+)+$/);
  });

  it("counts in the replication alarm: the front's failed and timed-out runs", () => {
    const [front] = logicalIdOf('ReplicationManifestRunsStateMachine');
    const alarm = resources('AWS::CloudWatch::Alarm').find(([id]) =>
      id.includes('replicationExecutionsFailed'),
    )?.[1] as Resource;
    const metrics = alarm.Properties.Metrics as {
      Id: string;
      Expression?: string;
      MetricStat?: { Metric: { MetricName: string; Dimensions: { Value: unknown }[] } };
    }[];
    const ofFront = metrics
      .filter((m) => JSON.stringify(m.MetricStat?.Metric.Dimensions ?? []).includes(front))
      .map((m) => m.MetricStat?.Metric.MetricName);
    expect(ofFront.sort()).toEqual(['ExecutionsFailed', 'ExecutionsTimedOut']);
    const expression = metrics.find((m) => m.Expression)?.Expression as string;
    for (const m of metrics.filter((x) => x.MetricStat)) expect(expression).toContain(`FILL(${m.Id}, 0)`);
  });
});
