// Which provider key a step reaches a target with: copying uses the target's copy key, retention's
// delete step its delete-capable key where one is configured (and the copy key otherwise).
import { describe, expect, it } from 'vitest';
import { awsLocations } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv, RuntimeTarget } from '../../../lambdas/lib/pipeline-env.ts';

const COPY_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgkeep/targets/b2-AbCdEf';
const DELETE_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgkeep/targets/b2-delete-GhIjKl';

function target(withDeleteKey: boolean): RuntimeTarget {
  return {
    name: withDeleteKey ? 'b2' : 'wasabi',
    type: 's3-compatible',
    endpoint: 'https://s3.us-west-004.backblazeb2.com',
    bucket: 'example',
    region: 'us-west-004',
    forcePathStyle: false,
    prefix: '',
    credentialsSecretArn: COPY_ARN,
    ...(withDeleteKey ? { deleteCredentialsSecretArn: DELETE_ARN } : {}),
  };
}

function factory() {
  const read: string[] = [];
  const env = {
    ingestBucket: 'ingest',
    ingestRegion: 'eu-west-1',
    clusters: [],
    targets: [],
  } as unknown as PipelineEnv;
  const locations = awsLocations(env, async (arn) => {
    read.push(arn);
    return { accessKeyId: arn === DELETE_ARN ? 'delete-key' : 'copy-key', secretAccessKey: 'x' };
  });
  return { locations, read };
}

describe('awsLocations', () => {
  it('reads the copy key for copying and the delete-capable key only for deleting', async () => {
    const { locations, read } = factory();
    const copy = await locations.target(target(true));
    expect(read).toEqual([COPY_ARN]);
    const del = await locations.target(target(true), 'delete');
    expect(read).toEqual([COPY_ARN, DELETE_ARN]);
    expect((await copy.storage.client.config.credentials()).accessKeyId).toBe('copy-key');
    expect((await del.storage.client.config.credentials()).accessKeyId).toBe('delete-key');
  });

  it('deletes with the copy key when the target has no separate delete key', async () => {
    const { locations, read } = factory();
    await locations.target(target(false), 'delete');
    expect(read).toEqual([COPY_ARN]);
  });
});

describe('which targets copy without a HEAD first', () => {
  it('AWS S3 targets and S3-compatible ones configured with conditionalWrites; others HEAD first', async () => {
    const { locations } = factory();
    const aws: RuntimeTarget = { name: 'dr', type: 'aws-s3', bucket: 'b', region: 'eu-west-1', prefix: '' };
    expect((await locations.target(aws)).conditionalWrites).toBe(true);
    expect((await locations.target(target(false))).conditionalWrites).toBe(false);
    const r2 = { ...target(false), name: 'r2', conditionalWrites: true };
    expect((await locations.target(r2)).conditionalWrites).toBe(true);
  });
});
