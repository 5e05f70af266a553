// Assertions on the synthesized templates (the example config, Lambdas really bundled by esbuild):
// what each resource promises in cdk/README.md and docs/architecture.md is in the template that would be deployed.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployConfig } from '../../cdk/config.ts';
import { HANDLER_TAG } from '../../cdk/constructs/pipeline-function.ts';
import { HOST_OBJECT_ACTIONS } from '../../cdk/iam-actions.ts';
import {
  baseBackupKey,
  clusterPrefix,
  globalsKey,
  logicalDumpKey,
  manifestKey,
  manifestsPrefix,
  walKey,
  walPrefix,
} from '../../core/keys.ts';
import { exampleConfig, type SynthesizedPipeline, synthPipeline } from '../support/state-machines.ts';

type Statement = {
  Effect: 'Allow' | 'Deny';
  Action: string | string[];
  Resource?: unknown;
  NotResource?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
  Principal?: unknown;
};
type Resource = { Type: string; Properties: Record<string, unknown>; DeletionPolicy?: string };

const actions = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
const resources = (t: Template, type: string) =>
  Object.entries(t.findResources(type)) as [string, Resource][];

/** Every statement of every identity policy in the template, with the logical id of the role it applies to. */
function identityStatements(t: Template): { role: string; statement: Statement }[] {
  const out: { role: string; statement: Statement }[] = [];
  for (const [id, role] of resources(t, 'AWS::IAM::Role'))
    for (const p of (role.Properties.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[])
      for (const statement of p.PolicyDocument.Statement) out.push({ role: id, statement });
  for (const [, policy] of resources(t, 'AWS::IAM::Policy')) {
    const roles = ((policy.Properties.Roles ?? []) as { Ref: string }[]).map((r) => r.Ref);
    for (const statement of (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
      for (const role of roles) out.push({ role, statement });
  }
  return out;
}

/** Does an IAM action pattern (with `*`) cover `action`? */
function covers(pattern: string, action: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*')}$`, 'i');
  return re.test(action);
}

let synth: SynthesizedPipeline;
let stateful: Template;
let pipeline: Template;
const config: DeployConfig = exampleConfig();

beforeAll(() => {
  synth = synthPipeline(config, { bundle: true });
  stateful = synth.stateful;
  pipeline = synth.pipeline;
});
afterAll(() => synth?.dispose());

describe('ingest bucket', () => {
  it('is versioned, Object Locked by default, private, encrypted, logged, retained, and publishes to EventBridge', () => {
    const [[, bucket]] = resources(stateful, 'AWS::S3::Bucket').filter(
      ([, b]) => b.Properties.ObjectLockEnabled,
    ) as [[string, Resource]];
    expect(bucket.DeletionPolicy).toBe('Retain');
    expect(bucket.Properties).toMatchObject({
      VersioningConfiguration: { Status: 'Enabled' },
      ObjectLockEnabled: true,
      ObjectLockConfiguration: {
        ObjectLockEnabled: 'Enabled',
        Rule: {
          DefaultRetention: { Mode: 'GOVERNANCE', Days: config.ingest.objectLock.defaultRetentionDays },
        },
      },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      LoggingConfiguration: { DestinationBucketName: expect.anything() },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
    });
    expect((bucket.Properties.LifecycleConfiguration as { Rules: unknown[] }).Rules).toContainEqual(
      expect.objectContaining({
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 2 },
        Status: 'Enabled',
      }),
    );
    // What ingest pruning deleted (a delete marker) loses its bytes a day later, once unlocked.
    expect((bucket.Properties.LifecycleConfiguration as { Rules: unknown[] }).Rules).toContainEqual({
      Id: 'expire-pruned-versions',
      Prefix: 'v1/',
      NoncurrentVersionExpiration: { NoncurrentDays: 1 },
      ExpiredObjectDeleteMarker: true,
      Status: 'Enabled',
    });
    expect(bucket.Properties.NotificationConfiguration).toEqual({
      EventBridgeConfiguration: { EventBridgeEnabled: true },
    });
  });

  it('refuses anything but TLS 1.2+ and writes outside the v1/ layout, for every principal', () => {
    const [[, policy]] = resources(stateful, 'AWS::S3::BucketPolicy').filter(([, p]) =>
      JSON.stringify(p.Properties.Bucket).includes('IngestBucket'),
    ) as [[string, Resource]];
    const statements = (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement;
    expect(statements).toContainEqual(
      expect.objectContaining({
        Effect: 'Deny',
        Action: 's3:*',
        Principal: { AWS: '*' },
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      }),
    );
    expect(statements).toContainEqual(
      expect.objectContaining({ Effect: 'Deny', Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } } }),
    );
    expect(statements).toContainEqual(
      expect.objectContaining({ Effect: 'Deny', Sid: 'DenyWritesOutsideLayout' }),
    );
  });

  it('the stateful stack retains its buckets, key and secrets when deleted', () => {
    for (const type of ['AWS::S3::Bucket', 'AWS::KMS::Key', 'AWS::SecretsManager::Secret'])
      for (const [id, r] of resources(stateful, type)) expect(r.DeletionPolicy, id).toBe('Retain');
    expect(resources(stateful, 'AWS::SecretsManager::Secret')).toHaveLength(1);
    expect(resources(pipeline, 'AWS::S3::Bucket')).toHaveLength(0);
  });

  it('creates each provider secret empty, named as in the config', () => {
    stateful.hasResourceProperties('AWS::SecretsManager::Secret', {
      Name: 'pgkeep/targets/b2',
      SecretString: JSON.stringify({ accessKeyId: '', secretAccessKey: '' }),
    });
  });

  it('has a KMS key with rotation', () => {
    stateful.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
  });
});

describe('host principal', () => {
  const hostStatements = () =>
    identityStatements(stateful)
      .filter(({ role }) => role.startsWith('Hostmain'))
      .map(({ statement }) => statement);

  it('may put objects and read and list its own prefix, nothing else (no KMS action: it holds public recipients only)', () => {
    const allows = hostStatements().filter((s) => s.Effect === 'Allow');
    const allowed = allows.flatMap(actions).sort();
    expect(allowed).toEqual([...HOST_OBJECT_ACTIONS, 's3:ListBucket'].sort());
    const objects = allows.find((s) => actions(s).includes('s3:PutObject'));
    expect(JSON.stringify(objects?.Resource)).toMatch(/"\/v1\/main\/\*"/);
    const list = allows.find((s) => actions(s).includes('s3:ListBucket'));
    expect(list?.Condition).toEqual({ StringLike: { 's3:prefix': ['v1/main/*'] } });
  });

  it('covers every key the agent writes under its own cluster, and no key of another cluster', () => {
    const allows = hostStatements().filter((s) => s.Effect === 'Allow');
    const objects = allows.find((s) => actions(s).includes('s3:PutObject'))!;
    // {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/v1/main/*"]]} -> "<bucket>/v1/main/*"
    const pattern = (objects.Resource as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1]
      .map((part) => (typeof part === 'string' ? part : '<bucket>'))
      .join('');
    const allowedKey = (key: string) => covers(pattern, `<bucket>/${key}`);
    const sha = 'ab'.repeat(32);
    const id = '20261122T021500Z-1a2b';
    for (const key of [
      walKey('main', '000000010000000000000003', sha),
      walKey('main', '00000002.history', sha),
      logicalDumpKey('main', 'shop', id),
      globalsKey('main', id),
      baseBackupKey('main', id, 'base'),
      baseBackupKey('main', id, 16384),
      manifestKey('main', id),
    ])
      expect(allowedKey(key), key).toBe(true);
    for (const key of [manifestKey('other', id), `v1/main-2/manifests/${id}.json`, `v2/main/x`, 'v1/main'])
      expect(allowedKey(key), key).toBe(false);
    const list = allows.find((s) => actions(s).includes('s3:ListBucket'))!;
    const prefixes = list.Condition?.StringLike?.['s3:prefix'] as string[];
    for (const prefix of [walPrefix('main'), manifestsPrefix('main'), clusterPrefix('main')])
      expect(
        prefixes.some((p) => covers(p, prefix)),
        prefix,
      ).toBe(true);
    expect(prefixes.some((p) => covers(p, 'v1/'))).toBe(false);
  });

  it('is explicitly denied deletes, overwrite-enabling and protection changes, governance bypass and kms:Decrypt', () => {
    const denied = hostStatements()
      .filter((s) => s.Effect === 'Deny')
      .flatMap(actions);
    for (const action of [
      's3:DeleteObject',
      's3:DeleteObjectVersion',
      's3:PutBucketVersioning',
      's3:PutObjectRetention',
      's3:PutObjectLegalHold',
      's3:PutBucketObjectLockConfiguration',
      's3:PutBucketPolicy',
      's3:DeleteBucketPolicy',
      's3:PutLifecycleConfiguration',
      's3:BypassGovernanceRetention',
      'kms:Decrypt',
    ])
      expect(
        denied.some((pattern) => covers(pattern, action)),
        action,
      ).toBe(true);
  });

  it('each cluster gets its own role limited to its own prefix', () => {
    const twoClusters = synthPipeline({
      ...config,
      clusters: [
        { name: 'alpha', hostAssumedBy: 'ec2' },
        { name: 'beta', hostAssumedBy: 'account' },
      ],
    });
    try {
      const statements = identityStatements(twoClusters.stateful);
      for (const [cluster, other] of [
        ['alpha', 'beta'],
        ['beta', 'alpha'],
      ] as const) {
        const own = statements.filter(({ role }) => role.toLowerCase().startsWith(`host${cluster}`));
        const text = JSON.stringify(own.filter(({ statement }) => statement.Effect === 'Allow'));
        expect(text).toContain(`/v1/${cluster}/*`);
        expect(text).not.toContain(`/v1/${other}/`);
      }
      twoClusters.stateful.hasOutput('HostInstanceProfilealpha', {});
      expect(Object.keys(twoClusters.stateful.findOutputs('HostInstanceProfilebeta'))).toHaveLength(0);
    } finally {
      twoClusters.dispose();
    }
  });
});

describe('kms:Decrypt', () => {
  it('only the verification task role is allowed it by an IAM policy', () => {
    const decryptors = [...identityStatements(stateful), ...identityStatements(pipeline)]
      .filter(
        ({ statement }) =>
          statement.Effect === 'Allow' && actions(statement).some((a) => covers(a, 'kms:Decrypt')),
      )
      .map(({ role }) => role);
    expect([...new Set(decryptors)]).toEqual([expect.stringMatching(/^VerificationTaskRolemain/)]);
    pipeline.hasResourceProperties('AWS::IAM::Role', {
      RoleName: 'pgkeep-verify-main',
      Path: { 'Fn::Join': ['', ['/pgkeep/', { Ref: 'AWS::Region' }, '/']] },
    });
    // ... and only to unseal the automation identity: the grant requires its encryption context.
    const grant = identityStatements(pipeline).find(
      ({ statement }) => statement.Effect === 'Allow' && actions(statement).includes('kms:Decrypt'),
    )?.statement;
    expect(actions(grant!)).toEqual(['kms:Decrypt']);
    expect(grant?.Condition).toEqual({
      StringEquals: {
        'kms:EncryptionContext:application': 'pgkeep',
        'kms:EncryptionContext:purpose': 'restore-verification-identity',
      },
    });
  });

  it('the key policy allows it only to the verification role (and an operator role) and denies everyone else', () => {
    const operator = 'arn:aws:iam::123456789012:role/pgkeep-operator';
    const withOperator = synthPipeline({ ...config, operatorRoleArn: operator });
    try {
      for (const [template, expected] of [
        [stateful, 1],
        [withOperator.stateful, 2],
      ] as const) {
        const [[, key]] = resources(template, 'AWS::KMS::Key') as [[string, Resource]];
        const statements = (key.Properties.KeyPolicy as { Statement: Statement[] }).Statement;
        const decrypting = statements.filter((s) => actions(s).some((a) => covers(a, 'kms:Decrypt')));
        expect(decrypting.map((s) => s.Effect).sort()).toEqual(['Allow', 'Deny']);
        const allow = decrypting.find((s) => s.Effect === 'Allow')!;
        const deny = decrypting.find((s) => s.Effect === 'Deny')!;
        const allowed = allow.Condition?.ArnEquals?.['aws:PrincipalArn'] as unknown[];
        expect(allowed).toHaveLength(expected);
        expect(JSON.stringify(allowed[0])).toContain('/pgkeep-verify-main');
        if (expected === 2) expect(allowed[1]).toBe(operator);
        expect(deny.Principal).toEqual({ AWS: '*' });
        expect(deny.Condition?.ArnNotEquals?.['aws:PrincipalArn']).toEqual(allowed);
        // No other statement may hand out decrypt (e.g. a blanket "kms:*" for the account).
        for (const s of statements.filter((s) => s.Effect === 'Allow' && s !== allow))
          for (const a of actions(s)) expect(covers(a, 'kms:Decrypt'), a).toBe(false);
      }
    } finally {
      withOperator.dispose();
    }
  });
});

describe('Lambdas', () => {
  it('run on Node 24 with a bounded timeout and memory, and log to a group with a retention', () => {
    const functions = resources(pipeline, 'AWS::Lambda::Function');
    expect(functions.length).toBeGreaterThanOrEqual(8);
    const logGroups = Object.fromEntries(resources(pipeline, 'AWS::Logs::LogGroup'));
    for (const [id, fn] of functions) {
      const p = fn.Properties;
      expect(p.Runtime, id).toBe('nodejs24.x');
      expect(p.Timeout, id).toBeGreaterThan(0);
      expect(p.Timeout as number, id).toBeLessThanOrEqual(900);
      expect(p.MemorySize as number, id).toBeGreaterThanOrEqual(128);
      expect(p.MemorySize as number, id).toBeLessThanOrEqual(3008);
      const group = (p.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
      expect(logGroups[group]?.Properties.RetentionInDays, id).toBeGreaterThan(0);
      expect(
        (p.Tags as { Key: string }[]).some((t) => t.Key === HANDLER_TAG),
        id,
      ).toBe(true);
    }
    // No function hides in the stateful stack (EventBridge notifications are a native bucket property).
    expect(resources(stateful, 'AWS::Lambda::Function')).toEqual([]);
  });

  it('are bundled by the local esbuild into one ESM file per handler', () => {
    const outdir = synth.app.synth().directory;
    for (const [id, fn] of resources(pipeline, 'AWS::Lambda::Function')) {
      const key = (fn.Properties.Code as { S3Key: string }).S3Key;
      const bundle = path.join(outdir, `asset.${key.replace(/\.zip$/, '')}`, 'index.mjs');
      expect(existsSync(bundle), `${id}: ${bundle}`).toBe(true);
      expect(readFileSync(bundle, 'utf8')).toMatch(
        /export\s*\{[^}]*\bas handler\b|export\s*\{[^}]*\bhandler\b/,
      );
    }
  });
});

describe('schedules, alarms, outputs', () => {
  it('schedule each capability with the expression and time zone of the config', () => {
    const schedules = resources(pipeline, 'AWS::Scheduler::Schedule');
    expect(schedules).toHaveLength(6);
    const expressions = schedules.map(([, s]) => s.Properties.ScheduleExpression).sort();
    expect(expressions).toEqual(
      [
        config.schedules.replication,
        config.schedules.replicationVerify,
        config.schedules.replicationReconcile,
        config.schedules.retention,
        config.schedules.verification,
        config.schedules.freshness,
      ].sort(),
    );
    for (const [, s] of schedules)
      expect(s.Properties.ScheduleExpressionTimezone).toBe(config.schedules.timeZone);
    pipeline.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: config.schedules.replicationVerify,
      Target: {
        Arn: { Ref: Match.stringLikeRegexp('^ReplicationStateMachine') },
        Input: JSON.stringify({ trigger: 'schedule', verify: true }),
      },
    });
    pipeline.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: config.schedules.replicationReconcile,
      Target: {
        Arn: { Ref: Match.stringLikeRegexp('^ReplicationStateMachine') },
        Input: JSON.stringify({ trigger: 'schedule', reconcile: true }),
      },
    });
    pipeline.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: config.schedules.verification,
      Target: { Arn: { Ref: Match.stringLikeRegexp('^VerificationStateMachine') } },
    });
    pipeline.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['aws.s3'], 'detail-type': ['Object Created'] },
      // A manifest starts the Express front (test/cdk/manifest-runs.test.ts), not the Standard machine.
      Targets: [
        Match.objectLike({ Arn: { Ref: Match.stringLikeRegexp('^ReplicationManifestRunsStateMachine') } }),
      ],
    });
  });

  it('every alarm notifies the alert topic, and each kind of staleness has one', () => {
    const [[topic]] = resources(pipeline, 'AWS::SNS::Topic') as [[string, Resource]];
    const alarms = resources(pipeline, 'AWS::CloudWatch::Alarm');
    // Per cluster: dump age, WAL age, archive gaps, one lag per target, one verification age per
    // source (ingest and each target).
    const perCluster = 3 + config.targets.length + (1 + config.targets.length);
    // 3 failed-run alarms, per-cluster freshness, verification, and one trust alarm per step.
    expect(alarms).toHaveLength(3 + config.clusters.length * perCluster + 1 + 2);
    for (const [id, alarm] of alarms) {
      expect(alarm.Properties.AlarmActions, id).toEqual([{ Ref: topic }]);
      expect(alarm.Properties.OKActions, id).toEqual([{ Ref: topic }]);
    }
    const metrics = alarms.map(([, a]) => a.Properties.MetricName).filter(Boolean);
    expect(metrics.sort()).toEqual(
      [
        'NewestDumpAgeSeconds',
        'NewestWalAgeSeconds',
        'ArchiveGaps',
        'ReplicationLagSeconds',
        'ReplicationLagSeconds',
        'VerificationFailed',
        'TrustViolations',
        'TrustViolations',
        'LastPassedVerificationAgeSeconds',
        'LastPassedVerificationAgeSeconds',
        'LastPassedVerificationAgeSeconds',
      ].sort(),
    );
    for (const step of ['replication', 'retention'])
      pipeline.hasResourceProperties('AWS::CloudWatch::Alarm', {
        MetricName: 'TrustViolations',
        Dimensions: [{ Name: 'Step', Value: step }],
        Statistic: 'Sum',
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      });
    pipeline.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'LastPassedVerificationAgeSeconds',
      Dimensions: [
        { Name: 'Cluster', Value: 'main' },
        { Name: 'Source', Value: 'b2' },
      ],
      Threshold: config.freshness.maxVerificationAgeDays * 86_400,
      TreatMissingData: 'breaching',
    });
    pipeline.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'NewestDumpAgeSeconds',
      Threshold: config.freshness.maxDumpAgeHours * 3600,
      TreatMissingData: 'breaching',
    });
    // Any gap alarms; a run that measures nothing is StaleWal's to report, not a gap.
    pipeline.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ArchiveGaps',
      Dimensions: [{ Name: 'Cluster', Value: 'main' }],
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      TreatMissingData: 'notBreaching',
    });
    pipeline.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: config.alerts.emails[0],
    });
    expect(resources(pipeline, 'AWS::CloudWatch::Dashboard')).toHaveLength(1);
  });

  it('the stateful stack outputs what the host needs', () => {
    for (const output of [
      'HostRoleArnmain',
      'HostInstanceProfilemain',
      'RepositoryUrlmain',
      'BackupKeyArn',
      'IngestBucketName',
    ])
      stateful.hasOutput(output, {});
    stateful.hasOutput('RepositoryUrlmain', {
      Value: { 'Fn::Join': ['', ['s3://', { Ref: Match.stringLikeRegexp('^IngestBucket') }]] },
    });
  });

  it('runs verification on Fargate with one task definition per PostgreSQL major, built from verify/Dockerfile', () => {
    const tasks = resources(pipeline, 'AWS::ECS::TaskDefinition');
    expect(tasks.map(([, t]) => t.Properties.Family).sort()).toEqual(
      config.verification.postgresMajorVersions.map((v) => `pgkeep-verify-pg${v}`).sort(),
    );
    for (const [, t] of tasks) {
      expect(t.Properties.RequiresCompatibilities).toEqual(['FARGATE']);
      // Its own role is granted nothing: every run passes the role of the cluster it verifies.
      expect(JSON.stringify(t.Properties.TaskRoleArn)).toContain('VerificationTaskRoleWithoutGrants');
      // The restore parameters are RunTask overrides, never baked into the task definition.
      expect(
        (t.Properties.ContainerDefinitions as { Environment?: unknown }[])[0]?.Environment,
      ).toBeUndefined();
    }
    const assets = JSON.parse(
      readFileSync(path.join(synth.app.outdir, `${synth.stacks.pipeline.artifactId}.assets.json`), 'utf8'),
    ) as {
      dockerImages: Record<
        string,
        { source: { dockerFile: string; dockerBuildArgs: Record<string, string> } }
      >;
    };
    const images = Object.values(assets.dockerImages).map((i) => i.source);
    expect(images.map((i) => i.dockerBuildArgs.PG_MAJOR).sort()).toEqual(
      config.verification.postgresMajorVersions.map(String).sort(),
    );
    for (const image of images) expect(image.dockerFile).toBe('verify/Dockerfile');
  });
});
