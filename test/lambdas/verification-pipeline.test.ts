// The verification state machine from `cdk synth`, run by aws-local-stepfunctions with its real
// Lambda handlers, its ECS task bound to a real `pgkeep verify --from-env` process (the built agent,
// the state's container overrides as its environment), KMS a local stand-in with the real SDK client,
// and real PostgreSQL and S3-compatible servers: a passing backup from ingest, the same backup from a
// provider's copy (credentials from a local Secrets Manager), and a corrupted one.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer, text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey } from '../../core/keys.ts';
import { parseVerifyReport } from '../../core/verify-report.ts';
import { measureFreshness } from '../../lambdas/freshness/measure.ts';
import { awsLocations, type Location, type LocationFactory } from '../../lambdas/lib/locations.ts';
import { METRICS } from '../../lambdas/lib/metrics.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { copyRepository, flipByte, leftovers } from '../agent/verify/verify-support.ts';
import { referenceKeyPairs } from '../support/age-keys.ts';
import { type AwsJsonServer, startLocalSecretsManager } from '../support/aws-json-server.ts';
import { type LocalKms, localKms } from '../support/local-kms.ts';
import { localTasks } from '../support/local-pipeline.ts';
import { startLocalStepFunctions } from '../support/local-step-functions.ts';
import { PG_BIN, type PgCluster, startCluster } from '../support/pg-cluster.ts';
import { runPgkeep } from '../support/pgkeep-cli.ts';
import {
  S3RVER_CREDENTIALS,
  type S3Server,
  s3rverStorage,
  startS3Server,
  useS3rverCredentials,
} from '../support/s3-server.ts';
import {
  type ExecutionFailed,
  exampleConfig,
  runStateMachine,
  type SynthesizedPipeline,
  synthPipeline,
  type TaskBindings,
} from '../support/state-machines.ts';

const CLUSTER = 'main';
const KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555';
const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/targets/b2-AbCdEf';

let pg: PgCluster;
let ingestServer: S3Server;
let provider: S3Server;
let kms: LocalKms;
let kmsServer: AwsJsonServer;
let secrets: AwsJsonServer;
let work: string;
let synth: SynthesizedPipeline;
let env: PipelineEnv;
let locations: LocationFactory;
let sealedIdentity: string;
let backupId: string;

beforeAll(async () => {
  useS3rverCredentials();
  [pg, ingestServer, provider] = await Promise.all([
    startCluster(),
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['offsite'] }),
  ]);
  kms = localKms([KEY_ARN]);
  kmsServer = await kms.serve();
  secrets = await startLocalSecretsManager(
    new Map([[SECRET_ARN, JSON.stringify({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' })]]),
  );
  work = await mkdtemp(join(tmpdir(), 'pgkeep-verify-pipeline-'));
  await chmod(work, 0o711); // the scratch cluster runs as postgres when the tests run as root

  // The operator's two keys: an offline escrow identity, and the automation identity sealed by KMS.
  const escrow = (await referenceKeyPairs()).hybrid;
  const keygen = await runPgkeep(['keygen', '--kms-key', KEY_ARN, '-o', join(work, 'sealed')], {
    AWS_ENDPOINT_URL_KMS: kmsServer.endpoint,
    ...S3RVER_CREDENTIALS_ENV,
  });
  expect(keygen.code, keygen.stderr).toBe(0);
  sealedIdentity = (await import('node:fs')).readFileSync(join(work, 'sealed'), 'utf8').trim();

  // The host: a logical backup of "shop", encrypted to both recipients, into ingest.
  await pg.sql('create database shop');
  await pg.sql(
    `create table orders (id int primary key, item text not null);
     insert into orders select g, 'item ' || g from generate_series(1, 500) g;`,
    'shop',
  );
  const config = join(work, 'pgkeep.yaml');
  await writeFile(
    config,
    JSON.stringify({
      cluster: CLUSTER,
      repository: ingestServer.url('ingest'),
      recipients: [escrow.recipient, keygen.stdout.trim()],
      spoolDir: join(work, 'spool'),
      pgBin: PG_BIN,
    }),
  );
  const backup = await runPgkeep(['backup', '--db', 'shop'], {
    ...pg.env,
    PGKEEP_CONFIG: config,
    ...S3RVER_CREDENTIALS_ENV,
  });
  expect(backup.code, backup.stderr).toBe(0);
  const ingest = s3rverStorage(ingestServer.endpoint, 'ingest');
  for await (const o of ingest.list(`v1/${CLUSTER}/manifests/`))
    backupId = o.key.split('/').pop()!.replace('.json', '');
  // The provider's copy, as replication makes it.
  await copyRepository(ingest, s3rverStorage(provider.endpoint, 'offsite'), 'v1/');

  const major = Number(await pg.sql('show server_version_num')) / 10_000;
  const deploy = exampleConfig();
  synth = synthPipeline({
    ...deploy,
    verification: {
      ...deploy.verification,
      postgresMajorVersions: [Math.floor(major)],
      sealedIdentity,
      assertions: [
        { name: 'orders present', database: 'shop', query: 'select count(*) from orders', expected: '500' },
      ],
    },
  });
  env = {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: [CLUSTER],
    targets: [
      {
        name: 'b2',
        type: 's3-compatible',
        endpoint: provider.endpoint,
        bucket: 'offsite',
        region: 'us-east-1',
        forcePathStyle: true,
        prefix: '',
        credentialsSecretArn: SECRET_ARN,
      },
    ],
    batchSize: 10,
    maxBatchesPerRun: 10,
    metricNamespace: 'pgkeep',
    largeObjectBytes: 64 * 1024 * 1024,
    copyPartBytes: 8 * 1024 * 1024,
    partsPerInvocation: 2,
  };
  const production = awsLocations(env, async () => S3RVER_CREDENTIALS);
  const ingestLocation: Location = { name: 'ingest', storage: ingest };
  locations = { ingest: async () => ingestLocation, target: (t) => production.target(t) };
}, 120_000);

afterAll(async () => {
  synth?.dispose();
  await Promise.all([
    pg?.destroy(),
    ingestServer?.stop(),
    provider?.stop(),
    kmsServer?.stop(),
    secrets?.stop(),
  ]);
  if (work) await rm(work, { recursive: true, force: true });
});

const S3RVER_CREDENTIALS_ENV = {
  AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  AWS_REGION: 'us-east-1',
};

type EcsInput = { Overrides: { ContainerOverrides: { Environment: { Name: string; Value: string }[] }[] } };
const tasks: { env: Record<string, string>; code: number | null; stdout: string; stderr: string }[] = [];

/**
 * The ECS task: `pgkeep verify --from-env` with the state's overrides as its environment. AWS itself
 * is not reachable, so the task's AWS S3 URLs (ingest, from the synthesized definition) are pointed
 * at the local server, as the Lambdas' locations are, and the key ARN (a cross-stack import in the
 * synthesized definition) at the local KMS's key; its task role is s3rver's key.
 */
async function runTask(input: unknown): Promise<unknown> {
  const overrides = Object.fromEntries(
    (input as EcsInput).Overrides.ContainerOverrides[0]!.Environment.map((e) => [e.Name, e.Value]),
  );
  const local = (url: string) =>
    url.startsWith('s3://ingest/') || url.includes('pgkeep-ingest-') ? ingestServer.url('ingest') : url;
  const taskEnv = {
    ...overrides,
    PGKEEP_REPOSITORY: local(overrides.PGKEEP_REPOSITORY!),
    PGKEEP_VERIFY_REPORT_REPOSITORY: local(overrides.PGKEEP_VERIFY_REPORT_REPOSITORY!),
    PGKEEP_VERIFY_WORKDIR: work,
    PGKEEP_KMS_KEY_ARN: KEY_ARN,
    ...S3RVER_CREDENTIALS_ENV,
    AWS_ENDPOINT_URL_KMS: kmsServer.endpoint,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: secrets.endpoint,
  };
  const result = await runPgkeep(['verify', '--from-env'], taskEnv);
  tasks.push({ env: overrides, ...result });
  // RunTask (.sync) succeeds when the container ran; its exit code is the report's business.
  return { StopCode: 'EssentialContainerExited', Containers: [{ ExitCode: result.code }] };
}

function bindings(alerts: unknown[]): TaskBindings {
  const major = synth.stateMachine('verification');
  const restore = Object.keys(major.definition.States).find((name) =>
    name.startsWith('Restore on PostgreSQL'),
  )!;
  return {
    lambdas: localTasks('verification', { env, locations, policies: {} }),
    states: { [restore]: runTask, 'Alert verification failure': (input) => alerts.push(input) },
  };
}

async function reportOf(key: string) {
  return parseVerifyReport(await text(await (await locations.ingest()).storage.get(key)));
}

describe('the verification state machine with a real pgkeep verify --from-env task', () => {
  it('verifies the newest backup from ingest: unsealed once with KMS, checked, reported, recorded as passed', async () => {
    const alerts: unknown[] = [];
    const decrypts = kms.decryptCalls.length;
    const run = await runStateMachine(synth.stateMachine('verification'), bindings(alerts), {
      trigger: 'schedule',
    });
    const task = tasks.at(-1)!;
    expect(task.code, task.stderr).toBe(0);
    expect(kms.decryptCalls.length - decrypts).toBe(1);
    expect(run.statesEntered.at(-1)).toBe('Backup verified');
    const output = run.output as {
      backup: { reportKey: string; source: string };
      result: { passed: boolean };
    };
    expect(output.backup.source).toBe('ingest');
    const report = await reportOf(output.backup.reportKey);
    expect(report).toMatchObject({ cluster: CLUSTER, backupId, source: 'ingest', passed: true, exitCode: 0 });
    expect(report?.checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['amcheck', 'assertion:orders present']),
    );
    expect(alerts).toEqual([]);
    // The overrides carry no credential, only where the sealed identity and the secret are.
    expect(JSON.stringify(task.env)).not.toContain('S3RVER');
    expect(await leftovers(work)).toEqual(['file pgkeep.yaml', 'file sealed']);
  });

  it("verifies the provider's copy next, with the provider's key from Secrets Manager; the report names the provider", async () => {
    const run = await runStateMachine(synth.stateMachine('verification'), bindings([]), {});
    const task = tasks.at(-1)!;
    expect(task.code, task.stderr).toBe(0);
    expect(task.env.PGKEEP_VERIFY_SOURCE).toBe('b2');
    expect(task.env.PGKEEP_SOURCE_SECRET_ARN).toBe(SECRET_ARN);
    const output = run.output as { backup: { reportKey: string }; result: { summary: string } };
    expect(await reportOf(output.backup.reportKey)).toMatchObject({ source: 'b2', passed: true, backupId });
    expect(output.result.summary).toContain(`from b2: restore verified`);
  });

  it('freshness publishes the time since the last passed verification per source, from the trusted reports only', async () => {
    const ingest = (await locations.ingest()).storage;
    // A host could write this (its own prefix): it must not count as b2 verified "now".
    const forged = {
      ...(await reportOf(tasks.at(-1)!.env.PGKEEP_VERIFY_REPORT_KEY!)),
      finishedAt: '2030-01-01T00:00:00.000Z',
    };
    await ingest.put(`v1/${CLUSTER}/verify/forged.json`, Readable.from([JSON.stringify(forged)]));
    const now = new Date(Date.now() + 3_600_000);
    const { metrics } = await measureFreshness(env, locations, now);
    const ages = metrics.filter((m) => m.name === METRICS.verificationAgeSeconds);
    expect(ages.map((m) => m.dimensions)).toEqual([
      { Cluster: CLUSTER, Source: 'ingest' },
      { Cluster: CLUSTER, Source: 'b2' },
    ]);
    for (const age of ages) {
      expect(age.value).toBeGreaterThan(3_500);
      expect(age.value).toBeLessThan(3_600 + 600);
    }
  });

  it('pgkeep pipeline run verification --wait starts a run through the Step Functions API and follows it; status lists it', async () => {
    const machine = 'arn:aws:states:us-east-1:123456789012:stateMachine:pgkeep-verification';
    const replication = 'arn:aws:states:us-east-1:123456789012:stateMachine:pgkeep-replication';
    const sfn = await startLocalStepFunctions(
      new Map([
        [machine, { machine: synth.stateMachine('verification'), bindings: bindings([]) }],
        [replication, undefined],
      ]),
    );
    try {
      const cliEnv = {
        ...S3RVER_CREDENTIALS_ENV,
        HOME: work,
        PGKEEP_CONFIG: join(work, 'pgkeep.yaml'),
        PGKEEP_PIPELINE_VERIFICATION: machine,
        PGKEEP_PIPELINE_REPLICATION: replication,
        PGKEEP_PIPELINE_POLL_MS: '200',
        AWS_ENDPOINT_URL_SFN: sfn.endpoint,
      };
      const run = await runPgkeep(
        ['pipeline', 'run', 'verification', '--cluster', CLUSTER, '--source', 'b2', '--wait'],
        cliEnv,
      );
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(
        /^started arn:aws:states:us-east-1:123456789012:execution:pgkeep-verification:cli-/,
      );
      expect(run.stdout).toContain('SUCCEEDED');
      expect(run.stdout).toContain(`from b2: restore verified`);
      expect(run.stdout).toContain(
        'https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/',
      );
      expect(tasks.at(-1)?.env.PGKEEP_VERIFY_SOURCE).toBe('b2');

      const status = await runPgkeep(['pipeline', 'status'], cliEnv);
      expect(status.code, status.stderr).toBe(0);
      const lines = status.stdout.split('\n').filter((l) => l.startsWith('verification'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        /^verification +cli-\S+ +\d{4}-\d\d-\d\dT\S+Z +SUCCEEDED +backup \S+ of cluster main from b2: restore verified/,
      );
      expect(status.stdout).not.toMatch(/^replication/m);
      // Manifest runs are Express executions, which ListExecutions does not return: status says where they are.
      expect(status.stdout).toContain(
        'note: runs started by a manifest are Express executions, not listed here: read them in CloudWatch Logs, log group /aws/vendedlogs/states/pgkeep-replication-manifests',
      );

      const unknown = await runPgkeep(
        ['pipeline', 'run', 'verification', '--cluster', 'nope', '--wait'],
        cliEnv,
      );
      expect(unknown.code).toBe(7);
      expect(unknown.stdout).toContain('FAILED');
    } finally {
      await sfn.settled();
      await sfn.stop();
    }
  });

  it('a corrupted backup fails the run with an alert that names the object', async () => {
    const ingest = (await locations.ingest()).storage;
    const dump = logicalDumpKey(CLUSTER, 'shop', backupId);
    const body = await buffer(await ingest.get(dump));
    await ingest.put(dump, Readable.from([flipByte(body)]));
    const alerts: { Message?: string }[] = [];
    const failed = await runStateMachine(synth.stateMachine('verification'), bindings(alerts), {
      source: 'ingest',
    }).catch((error: unknown) => error as ExecutionFailed);
    expect((failed as ExecutionFailed).error).toBe('VerificationFailed');
    const task = tasks.at(-1)!;
    expect(task.code).toBe(5);
    expect(alerts).toHaveLength(1);
    expect(alerts[0]?.Message).toContain('restore failed');
    expect(alerts[0]?.Message).toContain(dump);
  });
});
