// cdk-nag's AwsSolutions pack over both stacks: no finding without an acknowledgment, and every
// acknowledgment says why.
import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { exampleConfig, type SynthesizedPipeline, synthPipeline } from '../support/state-machines.ts';

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
