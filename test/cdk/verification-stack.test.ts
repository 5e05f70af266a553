// The verification part of the synthesized templates: reports a host cannot write, one task role per
// cluster that reads only that cluster's objects, HTTPS-only egress, and KMS unsealing for the task
// roles alone.
import type { Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployConfig } from '../../cdk/config.ts';
import { VERIFY_TASK_ENV } from '../../core/verify-task.ts';
import {
  allStates,
  exampleConfig,
  type SynthesizedPipeline,
  synthPipeline,
} from '../support/state-machines.ts';

type Statement = {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Action: string | string[];
  Resource?: unknown;
  NotResource?: unknown;
  Principal?: { AWS?: unknown };
  Condition?: Record<string, Record<string, unknown>>;
};
type Resource = { Type: string; Properties: Record<string, unknown> };

const actions = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const resources = (t: Template, type: string) =>
  Object.entries(t.findResources(type)) as [string, Resource][];

/** "<bucket>/v1/alpha/*" style text of a resource, tokens shown as <ref>. */
function render(value: unknown): string {
  if (typeof value === 'string') return value;
  const join = (value as { 'Fn::Join'?: [string, unknown[]] })['Fn::Join'];
  if (join) return join[1].map(render).join(join[0]);
  return '<ref>';
}

function roleStatements(t: Template, roleLogicalId: string): Statement[] {
  const out: Statement[] = [];
  const role = resources(t, 'AWS::IAM::Role').find(([id]) => id === roleLogicalId)?.[1];
  for (const p of (role?.Properties.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[])
    out.push(...p.PolicyDocument.Statement);
  for (const [, policy] of resources(t, 'AWS::IAM::Policy')) {
    const roles = ((policy.Properties.Roles ?? []) as { Ref: string }[]).map((r) => r.Ref);
    if (roles.includes(roleLogicalId))
      out.push(...(policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
  }
  return out;
}

const config: DeployConfig = {
  ...exampleConfig(),
  clusters: [
    { name: 'alpha', hostAssumedBy: 'ec2' },
    { name: 'beta', hostAssumedBy: 'account' },
  ],
};
let synth: SynthesizedPipeline;
beforeAll(() => {
  synth = synthPipeline(config);
});
afterAll(() => synth?.dispose());

const taskRoleId = (cluster: string) => {
  const found = resources(synth.pipeline, 'AWS::IAM::Role').find(
    ([, r]) => r.Properties.RoleName === `pgkeep-verify-${cluster}`,
  );
  if (!found) throw new Error(`no task role for ${cluster}`);
  return found[0];
};

describe('verification reports', () => {
  it('are denied to every host principal by the ingest bucket policy itself', () => {
    const [[, policy]] = resources(synth.stateful, 'AWS::S3::BucketPolicy').filter(([, p]) =>
      JSON.stringify(p.Properties.Bucket).includes('IngestBucket'),
    ) as [[string, Resource]];
    const statements = (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement;
    const deny = statements.find((s) => s.Sid === 'DenyHostsWritingReports')!;
    expect(deny.Effect).toBe('Deny');
    expect(actions(deny)).toEqual(['s3:PutObject']);
    expect(list(deny.Resource).map(render)).toEqual(['<ref>/verify/*', '<ref>/pipeline/*']);
    const principals = JSON.stringify(deny.Principal?.AWS);
    for (const host of ['Hostalpha', 'Hostbeta']) expect(principals).toContain(host);
    // The layout deny still lets the verifier write there (and nothing outside v1/, verify/ and the
    // pipeline's own state).
    const layout = statements.find((s) => s.Sid === 'DenyWritesOutsideLayout')!;
    expect(list(layout.NotResource).map(render).sort()).toEqual([
      '<ref>/pipeline/*',
      '<ref>/v1/*',
      '<ref>/verify/*',
    ]);
  });
});

describe('verification task', () => {
  it('has one role per cluster that reads, lists and reports only for its own cluster', () => {
    for (const [cluster, other] of [
      ['alpha', 'beta'],
      ['beta', 'alpha'],
    ] as const) {
      const statements = roleStatements(synth.pipeline, taskRoleId(cluster)).filter(
        (s) => s.Effect === 'Allow',
      );
      const text = JSON.stringify(statements);
      expect(text).not.toContain(`v1/${other}/`);
      expect(text).not.toContain(`verify/${other}/`);
      const reads = statements
        .filter((s) => actions(s).includes('s3:GetObject'))
        .flatMap((s) => list(s.Resource).map(render));
      expect(reads.sort()).toEqual(
        [
          `arn:<ref>:s3:::pgkeep-ingest-<ref>-<ref>/v1/${cluster}/*`,
          `arn:<ref>:s3:::example-pgkeep-dr/v1/${cluster}/*`,
          `arn:<ref>:s3:::pgkeep-ingest-<ref>-<ref>/verify/${cluster}/*`,
        ].sort(),
      );
      const writes = statements
        .filter((s) => actions(s).includes('s3:PutObject'))
        .flatMap((s) => list(s.Resource).map(render));
      expect(writes).toEqual([`arn:<ref>:s3:::pgkeep-ingest-<ref>-<ref>/verify/${cluster}/*`]);
      for (const listing of statements.filter((s) => actions(s).includes('s3:ListBucket')))
        expect(listing.Condition?.StringLike?.['s3:prefix']).toEqual([`v1/${cluster}/*`]);
      // Nothing broader than the cluster: every object ARN names the cluster's prefix; no "*".
      for (const r of statements.flatMap((s) => list(s.Resource).map(render))) {
        expect(r).not.toBe('*');
        const path = r.split(':::')[1];
        if (path?.includes('/')) expect(r).toContain(`/${cluster}/`);
      }
      // Every run of this cluster passes this role (RunTask's TaskRoleArn override, by its name).
      const names = JSON.stringify(synth.stateMachine('verification').definition);
      expect(names).toContain(`role/pgkeep/`);
    }
  });

  it('is the only principal that may kms:Decrypt, and the key policy names exactly the task roles', () => {
    const decryptors = new Set<string>();
    for (const template of [synth.stateful, synth.pipeline]) {
      for (const [id, role] of resources(template, 'AWS::IAM::Role'))
        for (const p of (role.Properties.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[])
          for (const s of p.PolicyDocument.Statement)
            if (s.Effect === 'Allow' && actions(s).some((a) => /^kms:(\*|Decrypt)$/i.test(a)))
              decryptors.add(id);
      for (const [, policy] of resources(template, 'AWS::IAM::Policy'))
        for (const s of (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
          if (s.Effect === 'Allow' && actions(s).some((a) => /^kms:(\*|Decrypt)$/i.test(a)))
            for (const r of (policy.Properties.Roles ?? []) as { Ref: string }[]) decryptors.add(r.Ref);
    }
    expect([...decryptors].sort()).toEqual([taskRoleId('alpha'), taskRoleId('beta')].sort());
    const [[, key]] = resources(synth.stateful, 'AWS::KMS::Key') as [[string, Resource]];
    const statements = (key.Properties.KeyPolicy as { Statement: Statement[] }).Statement;
    const allow = statements.find((s) => s.Effect === 'Allow' && actions(s).includes('kms:Decrypt'))!;
    const allowed = ((allow.Condition?.ArnEquals?.['aws:PrincipalArn'] ?? []) as unknown[]).map(render);
    expect(allowed).toEqual([
      'arn:<ref>:iam::<ref>:role/pgkeep/<ref>/pgkeep-verify-alpha',
      'arn:<ref>:iam::<ref>:role/pgkeep/<ref>/pgkeep-verify-beta',
    ]);
  });

  it("runs with a task-definition role that is granted nothing, so a run without its cluster's role can read nothing", () => {
    const [[id]] = resources(synth.pipeline, 'AWS::IAM::Role').filter(([id]) =>
      id.startsWith('VerificationTaskRoleWithoutGrants'),
    ) as [[string, Resource]];
    expect(roleStatements(synth.pipeline, id)).toEqual([]);
  });

  it('may send only HTTPS out and accepts nothing in', () => {
    const groups = resources(synth.pipeline, 'AWS::EC2::SecurityGroup').filter(([id]) =>
      id.startsWith('VerificationTaskSecurityGroup'),
    );
    expect(groups).toHaveLength(1);
    const [, group] = groups[0]!;
    expect(group.Properties.SecurityGroupEgress).toEqual([
      expect.objectContaining({ CidrIp: '0.0.0.0/0', IpProtocol: 'tcp', FromPort: 443, ToPort: 443 }),
    ]);
    expect(group.Properties.SecurityGroupIngress).toBeUndefined();
    expect(resources(synth.pipeline, 'AWS::EC2::SecurityGroupIngress')).toHaveLength(0);
  });

  it('gets every variable of the task contract as a RunTask override', () => {
    const machine = synth.stateMachine('verification');
    const runTasks = allStates(machine.definition).filter(([, s]) =>
      String(s.Resource).includes(':ecs:runTask'),
    );
    expect(runTasks.map(([name]) => name).sort()).toEqual(
      config.verification.postgresMajorVersions.map((v) => `Restore on PostgreSQL ${v}`).sort(),
    );
    // One task definition per major for every cluster; the picked cluster's role is passed per run,
    // and the task definitions' own role is granted nothing.
    const families = resources(synth.pipeline, 'AWS::ECS::TaskDefinition').map(
      ([, t]) => t.Properties.Family,
    );
    expect(families.sort()).toEqual(
      config.verification.postgresMajorVersions.map((v) => `pgkeep-verify-pg${v}`).sort(),
    );
    for (const [, state] of runTasks) {
      const overrides = (state.Parameters as { Overrides: Record<string, unknown> }).Overrides;
      expect(overrides['TaskRoleArn.$']).toMatch(
        /^States\.Format\('arn:.*:role\/pgkeep\/.*\/pgkeep-verify-\{\}', \$\.backup\.cluster\)$/,
      );
    }
    for (const [, state] of runTasks) {
      const overrides = (
        state.Parameters as { Overrides: { ContainerOverrides: { Environment: { Name: string }[] }[] } }
      ).Overrides.ContainerOverrides[0]!.Environment.map((e) => e.Name);
      expect(overrides.sort()).toEqual(Object.values(VERIFY_TASK_ENV).sort());
    }
  });
});
