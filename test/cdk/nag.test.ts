// cdk-nag's AwsSolutions pack over both stacks: no finding without an acknowledgment, and every
// acknowledgment says why.
import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  exampleConfig,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

let synth: SynthesizedPipeline;
beforeAll(() => {
  // Two clusters, both kinds of target and an operator role: every construct variant is checked.
  const config = exampleConfig();
  synth = synthPipeline({
    ...config,
    clusters: [...config.clusters, { name: 'reporting', hostAssumedBy: 'account' }],
    operatorRoleArn: 'arn:aws:iam::123456789012:role/pgkeep-operator',
  });
});
afterAll(() => synth?.dispose());

function acknowledgments(root: IConstruct): { path: string; id: string; reason: string }[] {
  return root.node.findAll().flatMap((construct) =>
    construct.node.metadata
      .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((entry) =>
        Object.entries(entry.data as Record<string, string>).map(([id, reason]) => ({
          path: construct.node.path,
          id,
          reason,
        })),
      ),
  );
}

it('AwsSolutions reports no unacknowledged finding', () => {
  const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(synth.app);
  const findings = report.violations.flatMap((v) =>
    v.violatingResources.map((r) => `${v.ruleName} at ${r.constructPath}: ${v.description}`),
  );
  expect(findings).toEqual([]);
  expect(report.success).toBe(true);
});

it('a minimal pipeline (no targets, one PostgreSQL version, COMPLIANCE lock) is clean too, and replication is a no-op', async () => {
  const config = exampleConfig();
  const minimal = synthPipeline({
    ...config,
    targets: [],
    ingest: { objectLock: { mode: 'COMPLIANCE', defaultRetentionDays: 30 } },
    verification: { ...config.verification, postgresMajorVersions: [17] },
  });
  try {
    const report = new AwsSolutionsChecks().validateScope(minimal.app);
    expect(
      report.violations.flatMap((v) =>
        v.violatingResources.map((r) => `${v.ruleName} at ${r.constructPath}`),
      ),
    ).toEqual([]);
    minimal.stateful.hasResourceProperties('AWS::S3::Bucket', {
      ObjectLockConfiguration: { Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 30 } } },
    });
    const unexpected = () => {
      throw new Error('no task should run without targets');
    };
    const run = await runStateMachine(
      minimal.stateMachine('replication'),
      {
        lambdas: {
          'replication/plan-copies': unexpected,
          'replication/copy-batch': unexpected,
          'replication/copy-manifests': unexpected,
          'replication/copy-large': unexpected,
        },
        states: { 'Alert replication failure': unexpected },
      },
      {},
    );
    expect(run.statesEntered).toEqual(['No targets to replicate to']);
  } finally {
    minimal.dispose();
  }
});

it('every acknowledgment names an AwsSolutions finding and gives a reason', () => {
  // CDK acknowledges some of its own template warnings (CloudFormation-Validate::…); ours are cdk-nag's.
  const all = acknowledgments(synth.app).filter(({ id }) => id.includes('AwsSolutions'));
  expect(all.length).toBeGreaterThan(5);
  for (const { path, id, reason } of all) {
    expect(id, path).toMatch(/^(Annotation::)?AwsSolutions-[A-Z0-9]+(\[.+\])?$/);
    // A sentence, not a placeholder.
    expect(reason.split(' ').length, `${path} ${id}`).toBeGreaterThanOrEqual(8);
  }
});
