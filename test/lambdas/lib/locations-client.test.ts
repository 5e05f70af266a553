/**
 * The pipeline's S3-compatible targets get their client from createS3Client, like the agent: the
 * provider's credentials from its secret, and the same timeouts on every call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awsLocations } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../../support/s3-server.ts';

describe('awsLocations target of an S3-compatible provider', () => {
  let s3: S3Server;
  beforeAll(async () => {
    s3 = await startS3Server({ buckets: ['provider'] });
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('signs with the credentials from the secret and has connect, request and idle timeouts', async () => {
    const env = { ingestBucket: 'ingest', ingestRegion: 'us-east-1', targets: [] } as unknown as PipelineEnv;
    const arns: string[] = [];
    const locations = awsLocations(env, async (arn) => {
      arns.push(arn);
      return { ...S3RVER_CREDENTIALS };
    });
    const arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:provider';
    const { storage } = await locations.target({
      name: 'provider',
      type: 's3-compatible',
      endpoint: s3.endpoint,
      bucket: 'provider',
      region: 'us-east-1',
      forcePathStyle: true,
      prefix: 'pgkeep',
      credentialsSecretArn: arn,
    });
    // s3rver refuses any other key, so an answer means the secret's credentials signed the request.
    expect(await storage.head('v1/db/x')).toBeUndefined();
    expect(arns).toEqual([arn]);
    const handler = storage.client.config.requestHandler as unknown as {
      httpHandlerConfigs(): Record<string, unknown>;
    };
    expect(handler.httpHandlerConfigs()).toMatchObject({
      connectionTimeout: 3_000,
      requestTimeout: 900_000,
      throwOnRequestTimeout: true,
      socketTimeout: 60_000,
    });
  });
});
