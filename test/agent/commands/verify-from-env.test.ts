// `pgkeep verify --from-env` (the built agent) when the run cannot be carried out: a missing or
// inconsistent variable is a config error naming it, and a KMS refusal still leaves a failed report
// at the picked key, naming the cause, so the pipeline records why.

import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyReportKey } from '../../../core/keys.ts';
import { parseVerifyReport } from '../../../core/verify-report.ts';
import { VERIFY_TASK_ENV } from '../../../core/verify-task.ts';
import { openStorage } from '../../../storage/open-storage.ts';
import type { AwsJsonServer } from '../../support/aws-json-server.ts';
import { localKms } from '../../support/local-kms.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';
import {
  S3RVER_CREDENTIALS,
  type S3Server,
  startS3Server,
  useS3rverCredentials,
} from '../../support/s3-server.ts';

const KEY = 'arn:aws:kms:us-east-1:123456789012:key/99999999-0000-0000-0000-000000000000';
let s3: S3Server;
let kms: AwsJsonServer;
let sealed: string;

beforeAll(async () => {
  useS3rverCredentials();
  s3 = await startS3Server({ buckets: ['ingest'] });
  const local = localKms([KEY]);
  kms = await local.serve({ decryptors: ['SOMEONE-ELSE'] });
  const { sealIdentity } = await import('../../../agent/kms/automation-identity.ts');
  sealed = await sealIdentity(
    'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ',
    KEY,
    local.sealer,
  );
});
afterAll(async () => {
  await Promise.all([s3?.stop(), kms?.stop()]);
});

function taskEnv(overrides: Record<string, string> = {}): Record<string, string> {
  const runId = '20261130T010000Z-20261130T000000Z-abcd';
  return {
    [VERIFY_TASK_ENV.repository]: s3.url('ingest'),
    [VERIFY_TASK_ENV.source]: 'ingest',
    [VERIFY_TASK_ENV.sourceSecretArn]: '',
    [VERIFY_TASK_ENV.reportRepository]: s3.url('ingest'),
    [VERIFY_TASK_ENV.cluster]: 'main',
    [VERIFY_TASK_ENV.backupId]: '20261130T000000Z-abcd',
    [VERIFY_TASK_ENV.runId]: runId,
    [VERIFY_TASK_ENV.reportKey]: verifyReportKey('main', runId),
    [VERIFY_TASK_ENV.kmsKeyArn]: KEY,
    [VERIFY_TASK_ENV.sealedIdentity]: sealed,
    [VERIFY_TASK_ENV.assertions]: '[]',
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_KMS: kms.endpoint,
    ...overrides,
  };
}

describe('pgkeep verify --from-env', () => {
  it("names a missing variable and a report key that is not the run's, and takes no other option", async () => {
    const missing = await runPgkeep(['verify', '--from-env'], taskEnv({ [VERIFY_TASK_ENV.cluster]: '' }));
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('PGKEEP_CLUSTER is not set');
    const wrongKey = await runPgkeep(
      ['verify', '--from-env'],
      taskEnv({ [VERIFY_TASK_ENV.reportKey]: 'v1/main/verify/x.json' }),
    );
    expect(wrongKey.code).toBe(3);
    expect(wrongKey.stderr).toContain(
      'PGKEEP_VERIFY_REPORT_KEY "v1/main/verify/x.json" is not the report key',
    );
    const extra = await runPgkeep(['verify', '--from-env', '--db', 'shop'], taskEnv());
    expect(extra.code).toBe(2);
  });

  it('writes a failed report naming the cause when KMS refuses to unseal the identity', async () => {
    const env = taskEnv();
    const run = await runPgkeep(['verify', '--from-env'], env);
    expect(run.code).toBe(1);
    const key = env[VERIFY_TASK_ENV.reportKey] as string;
    const report = parseVerifyReport(await text(await openStorage(s3.url('ingest')).get(key)));
    expect(report).toMatchObject({ passed: false, exitCode: 1, source: 'ingest', cluster: 'main' });
    expect(report?.checks).toEqual([
      expect.objectContaining({
        name: 'run',
        passed: false,
        detail: expect.stringContaining('AccessDeniedException'),
      }),
    ]);
    expect(run.stderr).toContain(`KMS refused to unseal the automation identity with ${KEY}`);
    expect(`${run.stdout}${run.stderr}`).not.toContain(sealed);
  });
});
