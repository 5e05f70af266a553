// The Targets construct's grants, on a stack of their own: what each grant lets a function do at
// the targets, and that only grantDelete hands out the delete-capable keys.
import { readFileSync } from 'node:fs';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DEPLOY_CONFIG_PATH, parseDeployConfig } from '../../cdk/config.ts';
import { PipelineFunction } from '../../cdk/constructs/pipeline-function.ts';
import { PipelineTargets } from '../../cdk/constructs/pipeline-targets.ts';
import { ENV, RuntimeTargetSchema } from '../../lambdas/lib/pipeline-env.ts';
import { exampleConfig } from '../support/state-machines.ts';

type Statement = { Action: string | string[]; Resource: unknown; Sid?: string };

function granted(grant: (targets: PipelineTargets, fn: PipelineFunction) => void) {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Grants');
  const config = exampleConfig();
  const secret = (name: string) => secretsmanager.Secret.fromSecretNameV2(stack, name, name);
  const targets = new PipelineTargets(stack, 'Targets', {
    bucket: s3.Bucket.fromBucketName(stack, 'Ingest', 'ingest'),
    clusterNames: ['main'],
    targets: config.targets,
    targetSecrets: new Map([['b2', secret('b2-key')]]),
    targetDeleteSecrets: new Map([['b2', secret('b2-delete-key')]]),
  });
  const fn = new PipelineFunction(stack, 'Fn', {
    handler: 'freshness/measure',
    description: 'test',
    timeout: Duration.minutes(1),
    memorySizeMiB: 128,
    environment: targets.environment(),
  });
  grant(targets, fn);
  const policies = Template.fromStack(stack).findResources('AWS::IAM::Policy');
  const statements = Object.values(policies).flatMap(
    (p) => (p.Properties.PolicyDocument.Statement as Statement[]) ?? [],
  );
  const actions = new Set(statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action])));
  return { targets, actions, statements, json: JSON.stringify(statements) };
}

describe('PipelineTargets', () => {
  it('grantRead: reads ingest and the targets, writes and deletes nothing', () => {
    const { actions, json } = granted((t, fn) => t.grantRead(fn));
    expect(actions).toContain('s3:GetObject');
    for (const a of ['s3:PutObject', 's3:DeleteObject', 's3:GetObjectRetention'])
      expect(actions).not.toContain(a);
    expect(json).not.toContain('b2-delete-key');
  });

  it('grantRead with objectLockState adds only s3:GetObjectRetention', () => {
    const { actions } = granted((t, fn) => t.grantRead(fn, { objectLockState: true }));
    expect(actions).toContain('s3:GetObjectRetention');
    expect(actions).not.toContain('s3:DeleteObject');
  });

  it('grantWrite: puts at the targets, never deletes', () => {
    const { actions, json } = granted((t, fn) => t.grantWrite(fn));
    expect(actions).toContain('s3:PutObject');
    expect(actions).not.toContain('s3:DeleteObject');
    expect(json).not.toContain('b2-delete-key');
  });

  it('grantDelete: deletes at the targets and alone may read the delete-capable keys', () => {
    const { actions, statements, json } = granted((t, fn) => t.grantDelete(fn));
    expect(actions).toContain('s3:DeleteObject');
    expect(statements.find((s) => s.Sid === 'ReadDeleteCapableProviderKeys')).toBeDefined();
    expect(json).toContain('b2-delete-key');
  });

  it('grantIngestDelete: DeleteObject under ingest v1/* and nothing else, no provider key', () => {
    const { actions, statements, json } = granted((t, fn) => t.grantIngestDelete(fn));
    // The function's own log and X-Ray grants aside, s3 and secrets: only the one delete.
    expect([...actions].filter((a) => /^(s3|secretsmanager):/.test(a))).toEqual(['s3:DeleteObject']);
    const prune = statements.filter((s) => s.Sid === 'PruneIngest');
    expect(prune.map((s) => JSON.stringify(s.Resource))).toEqual([expect.stringMatching(/ingest\/v1\/\*/)]);
    expect(json).not.toContain('b2-');
  });

  it('names the delete-capable keys in the environment only when asked', () => {
    const { targets } = granted(() => {});
    expect(targets.environment()[ENV.targets]).not.toContain('deleteCredentialsSecretArn');
    expect(targets.environment({ deleteCredentials: true })[ENV.targets]).toContain(
      'deleteCredentialsSecretArn',
    );
  });

  it('hands each target its walBundles option (on by default in the deploy config), as the Lambdas parse it', () => {
    const { targets } = granted(() => {});
    const runtime = RuntimeTargetSchema.array().parse(
      JSON.parse(targets.environment()[ENV.targets] as string),
    );
    expect(runtime.map((t) => [t.name, t.walBundles])).toEqual([
      ['dr-aws', true],
      ['b2', true],
    ]);
    const text = readFileSync(DEFAULT_DEPLOY_CONFIG_PATH, 'utf8');
    const off = parseDeployConfig(text.replaceAll('walBundles: true', 'walBundles: false'), 'test');
    expect(off.targets.map((t) => t.walBundles)).toEqual([false, false]);
    // Left out: on, as for a new config.
    const unset = parseDeployConfig(text.replaceAll(/^ *walBundles: true\n/gm, ''), 'test');
    expect(unset.targets.map((t) => t.walBundles)).toEqual([true, true]);
  });
});
