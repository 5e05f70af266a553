// Template assertions for what a compromised host cannot do at ingest (no overwrite, no SSE-C), and
// for who may read which provider credentials (copying and deleting at a target are separate).
import type { Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployConfig } from '../../cdk/config.ts';
import { exampleConfig, type SynthesizedPipeline, synthPipeline } from '../support/state-machines.ts';

type Statement = {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Action: string | string[];
  Resource?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
  Principal?: { AWS?: unknown };
};
type Resource = { Type: string; Properties: Record<string, unknown> };

const resources = (t: Template, type: string) =>
  Object.entries(t.findResources(type)) as [string, Resource][];
const actions = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);

function ingestPolicy(t: Template): Statement[] {
  const [[, policy]] = resources(t, 'AWS::S3::BucketPolicy').filter(([, p]) =>
    JSON.stringify(p.Properties.Bucket).includes('IngestBucket'),
  ) as [[string, Resource]];
  return (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement;
}

/** The host role's logical id for `cluster`. */
function hostRole(t: Template, cluster: string): string {
  const ids = resources(t, 'AWS::IAM::Role')
    .map(([id]) => id)
    .filter((id) => id.toLowerCase().startsWith(`host${cluster}role`));
  expect(ids, `host role of ${cluster}`).toHaveLength(1);
  return ids[0] as string;
}

const OVERWRITE = {
  Null: { 's3:if-none-match': 'true' },
  Bool: { 's3:ObjectCreationOperation': 'true' },
};
const SSE_C = { Null: { 's3:x-amz-server-side-encryption-customer-algorithm': 'false' } };

let synth: SynthesizedPipeline;
const config: DeployConfig = {
  ...exampleConfig(),
  clusters: [
    { name: 'alpha', hostAssumedBy: 'ec2' },
    { name: 'beta', hostAssumedBy: 'account' },
  ],
};
beforeAll(() => {
  synth = synthPipeline(config);
});
afterAll(() => synth?.dispose());

describe('ingest bucket policy against a compromised host', () => {
  it('denies every host a PutObject or CompleteMultipartUpload without If-None-Match (an overwrite)', () => {
    const statement = ingestPolicy(synth.stateful).find((s) => s.Sid === 'DenyHostOverwrites');
    expect(statement?.Effect).toBe('Deny');
    expect(actions(statement as Statement)).toEqual(['s3:PutObject']);
    expect(statement?.Condition).toEqual(OVERWRITE);
    expect(JSON.stringify(statement?.Resource)).toContain('/*');
    const principals = JSON.stringify(statement?.Principal?.AWS);
    for (const cluster of ['alpha', 'beta']) expect(principals).toContain(hostRole(synth.stateful, cluster));
  });

  it('denies every host any SSE-C upload (an object the pipeline could not read)', () => {
    const statement = ingestPolicy(synth.stateful).find((s) => s.Sid === 'DenyHostSseC');
    expect(statement?.Effect).toBe('Deny');
    expect(actions(statement as Statement)).toEqual(['s3:PutObject']);
    expect(statement?.Condition).toEqual(SSE_C);
    const principals = JSON.stringify(statement?.Principal?.AWS);
    for (const cluster of ['alpha', 'beta']) expect(principals).toContain(hostRole(synth.stateful, cluster));
  });

  it('names only host roles in those denies: the pipeline and verification roles are not in them', () => {
    const denies = ingestPolicy(synth.stateful).filter((s) => s.Sid?.startsWith('DenyHost'));
    const hosts = ['alpha', 'beta'].map((c) => hostRole(synth.stateful, c));
    for (const statement of denies) {
      const named = JSON.stringify(statement.Principal?.AWS).match(/"([A-Za-z0-9]+)","Arn"/g) ?? [];
      expect(named.map((n) => n.split('"')[1]).sort()).toEqual([...hosts].sort());
    }
  });

  it('repeats both denies in each host role policy, so they hold whatever else is attached', () => {
    for (const cluster of ['alpha', 'beta']) {
      const [, role] = resources(synth.stateful, 'AWS::IAM::Role').find(
        ([id]) => id === hostRole(synth.stateful, cluster),
      ) as [string, Resource];
      const statements = (
        role.Properties.Policies as { PolicyDocument: { Statement: Statement[] } }[]
      ).flatMap((p) => p.PolicyDocument.Statement);
      expect(statements).toContainEqual(
        expect.objectContaining({ Sid: 'DenyOverwrites', Effect: 'Deny', Condition: OVERWRITE }),
      );
      expect(statements).toContainEqual(
        expect.objectContaining({ Sid: 'DenySseC', Effect: 'Deny', Condition: SSE_C }),
      );
    }
  });
});

describe("the pipeline's own state in ingest", () => {
  it('is denied to every host, and its old versions expire once their Object Lock ends', () => {
    const deny = ingestPolicy(synth.stateful).find((s) => s.Sid === 'DenyHostsWritingReports');
    expect(JSON.stringify(deny?.Resource)).toContain('/pipeline/*');
    const [[, bucket]] = resources(synth.stateful, 'AWS::S3::Bucket').filter(
      ([id, b]) => id.startsWith('IngestBucket') && 'ObjectLockConfiguration' in b.Properties,
    ) as [[string, Resource]];
    const rules = (bucket.Properties.LifecycleConfiguration as { Rules: Record<string, unknown>[] }).Rules;
    const days = (
      bucket.Properties.ObjectLockConfiguration as { Rule: { DefaultRetention: { Days: number } } }
    ).Rule.DefaultRetention.Days;
    expect(rules).toContainEqual(
      expect.objectContaining({
        Prefix: 'pipeline/',
        NoncurrentVersionExpiration: { NoncurrentDays: days + 1 },
        Status: 'Enabled',
      }),
    );
  });
});

describe('provider credentials: copying and deleting are separate', () => {
  let split: SynthesizedPipeline;
  beforeAll(() => {
    const base = exampleConfig();
    split = synthPipeline({
      ...base,
      targets: base.targets.map((t) =>
        t.type === 's3-compatible'
          ? { ...t, deleteCredentialsSecretName: `${t.credentialsSecretName}-delete` }
          : t,
      ),
    });
  });
  afterAll(() => split?.dispose());

  /** Role logical id -> every statement of the policies attached to it, in the pipeline stack. */
  function statementsByRole(t: Template): Map<string, Statement[]> {
    const out = new Map<string, Statement[]>();
    for (const [, policy] of resources(t, 'AWS::IAM::Policy'))
      for (const role of (policy.Properties.Roles ?? []) as { Ref: string }[])
        out.set(role.Ref, [
          ...(out.get(role.Ref) ?? []),
          ...(policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
        ]);
    return out;
  }

  /** Roles that may read a secret whose logical id contains `secretId`. */
  function readersOf(t: Template, secretId: string): string[] {
    return [...statementsByRole(t)]
      .filter(([, statements]) =>
        statements.some(
          (s) =>
            s.Effect === 'Allow' &&
            actions(s).includes('secretsmanager:GetSecretValue') &&
            JSON.stringify(s.Resource).includes(secretId),
        ),
      )
      .map(([role]) => role)
      .sort();
  }

  it('creates the delete-capable secret empty, next to the copy secret', () => {
    split.stateful.hasResourceProperties('AWS::SecretsManager::Secret', { Name: 'pgkeep/targets/b2' });
    split.stateful.hasResourceProperties('AWS::SecretsManager::Secret', {
      Name: 'pgkeep/targets/b2-delete',
      SecretString: JSON.stringify({ accessKeyId: '', secretAccessKey: '' }),
    });
  });

  it("only retention's delete step may read the delete-capable key; the copy steps cannot", () => {
    const deleteReaders = readersOf(split.pipeline, 'Targetb2Delete');
    expect(deleteReaders).toHaveLength(1);
    expect(deleteReaders[0]).toMatch(/^RetentionDeleteBatch/);
    const copyReaders = readersOf(split.pipeline, 'TargetCredentialsTargetb2');
    expect(copyReaders.some((r) => r.startsWith('ReplicationCopyBatch'))).toBe(true);
    for (const role of copyReaders.filter((r) => r.startsWith('Replication')))
      expect(deleteReaders).not.toContain(role);
  });

  it('gives the delete secret ARN only to the retention functions; replication does not even learn it', () => {
    const knowing = resources(split.pipeline, 'AWS::Lambda::Function')
      .filter(([, fn]) =>
        JSON.stringify(fn.Properties.Environment ?? {}).includes('deleteCredentialsSecretArn'),
      )
      .map(([id]) => id);
    expect(knowing.some((id) => id.startsWith('RetentionDeleteBatch'))).toBe(true);
    for (const id of knowing) expect(id).toMatch(/^Retention/);
  });

  it('on AWS targets, IAM gives delete actions to the delete step alone', () => {
    for (const [role, statements] of statementsByRole(split.pipeline)) {
      const deleting = statements.filter(
        (s) =>
          s.Effect === 'Allow' &&
          actions(s).some((a) => a === 's3:DeleteObject' || a === 's3:DeleteObjectVersion'),
      );
      // Replication drops its own proposed cursors in ingest, and nothing else.
      const cursorsOnly = (s: (typeof deleting)[number]) => {
        const resource = JSON.stringify(s.Resource);
        return resource.includes(':s3:::pgkeep-ingest-') && resource.endsWith('"/pipeline/replication/*"]]}');
      };
      // Ingest pruning's delete step deletes under ingest's v1/* and nowhere else.
      const ingestLayoutOnly = (s: (typeof deleting)[number]) =>
        role.startsWith('RetentionDeleteIngestBatch') &&
        JSON.stringify(actions(s)) === '["s3:DeleteObject"]' &&
        JSON.stringify(s.Resource).includes(':s3:::pgkeep-ingest-') &&
        JSON.stringify(s.Resource).endsWith('"/v1/*"]]}');
      for (const s of deleting)
        if (!cursorsOnly(s) && !ingestLayoutOnly(s))
          expect(role, `${role} ${JSON.stringify(s.Resource)}`).toMatch(/^RetentionDeleteBatch/);
    }
  });

  it('ingest pruning: only its delete step may delete in ingest, and only under v1/*; the plan step reads', () => {
    const roles = [...statementsByRole(split.pipeline)];
    const pruning = roles.filter(([role]) => role.startsWith('RetentionDeleteIngestBatch'));
    expect(pruning).toHaveLength(1);
    const [, statements] = pruning[0] as (typeof roles)[number];
    const allowed = statements.filter((s) => s.Effect === 'Allow').flatMap((s) => actions(s));
    expect(allowed.filter((a) => a.startsWith('s3:Delete'))).toEqual(['s3:DeleteObject']);
    expect(allowed).not.toContain('s3:DeleteObjectVersion');
    expect(allowed).not.toContain('s3:BypassGovernanceRetention');
    const plan = roles.find(([role]) => role.startsWith('RetentionPlanIngestPrune'));
    expect(plan?.[1].flatMap((s) => actions(s)).filter((a) => a.startsWith('s3:Delete'))).toEqual([]);
  });

  it('only the freshness function writes its state under pipeline/freshness/, and nothing else in ingest', () => {
    const writers: string[] = [];
    for (const [role, statements] of statementsByRole(split.pipeline))
      for (const s of statements) {
        const resource = JSON.stringify(s.Resource);
        if (s.Effect !== 'Allow' || !actions(s).includes('s3:PutObject')) continue;
        if (resource.endsWith('"/pipeline/freshness/*"]]}')) writers.push(role);
        if (role.startsWith('FreshnessMeasure'))
          expect(resource).toMatch(/"\/pipeline\/freshness\/\*"\]\]\}$/);
      }
    expect(writers).toHaveLength(1);
    expect(writers[0]).toMatch(/^FreshnessMeasure/);
  });

  it("freshness reads replication's lag records under pipeline/replication/, and no cursor or plan there", () => {
    const replicationState = [...statementsByRole(split.pipeline)]
      .filter(([role]) => role.startsWith('FreshnessMeasure'))
      .flatMap(([, statements]) => statements)
      .map((s) => JSON.stringify(s.Resource))
      .filter((resource) => resource.includes('/pipeline/replication/'));
    expect(replicationState).toHaveLength(1);
    expect(replicationState[0]).toMatch(/"\/pipeline\/replication\/\*\/lag\.json"\]\]\}$/);
  });
});
