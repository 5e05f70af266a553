// What the s3rver test server (test/support/s3-server.ts) does, pinned down because other tests rely on it.

import { createHash } from 'node:crypto';
import { request } from 'node:http';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../support/s3-server.ts';

let plain: S3Server;
let conditional: S3Server;
beforeAll(async () => {
  [plain, conditional] = await Promise.all([
    startS3Server({ buckets: ['repo'] }),
    startS3Server({ buckets: ['repo'], conditionalWrites: true }),
  ]);
});
afterAll(async () => {
  await Promise.all([plain?.stop(), conditional?.stop()]);
});

function client(server: S3Server, maxAttempts = 3): S3Client {
  return new S3Client({
    maxAttempts,
    endpoint: server.endpoint,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: S3RVER_CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

async function read(s3: S3Client, key: string): Promise<string> {
  const response = await s3.send(new GetObjectCommand({ Bucket: 'repo', Key: key }));
  return (await response.Body?.transformToString()) ?? '';
}

describe('s3rver test server', () => {
  it('ignores If-None-Match by default, like providers without conditional writes', async () => {
    const s3 = client(plain);
    await s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'inm', Body: 'one' }));
    await s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'inm', Body: 'two', IfNoneMatch: '*' }));
    expect(await read(s3, 'inm')).toBe('two');
  });

  it('honours If-None-Match with conditionalWrites, answering 412 PreconditionFailed', async () => {
    const s3 = client(conditional);
    await s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'inm', Body: 'one', IfNoneMatch: '*' }));
    await expect(
      s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'inm', Body: 'two', IfNoneMatch: '*' })),
    ).rejects.toMatchObject({ name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 } });
    expect(await read(s3, 'inm')).toBe('one');
  });

  it('refuses a body that does not match its Content-MD5 (400 BadDigest) and stores nothing, as S3 does', async () => {
    const s3 = client(plain);
    const md5 = (body: string) => createHash('md5').update(body).digest('base64');
    await expect(
      s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'md5', Body: 'two', ContentMD5: md5('one') })),
    ).rejects.toMatchObject({ name: 'BadDigest', $metadata: { httpStatusCode: 400 } });
    await expect(read(s3, 'md5')).rejects.toMatchObject({ name: 'NoSuchKey' });
    await s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'md5', Body: 'one', ContentMD5: md5('one') }));
    expect(await read(s3, 'md5')).toBe('one');
  });

  it('lists and aborts multipart uploads', async () => {
    const s3 = client(plain);
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'repo', Key: 'mp/a' }));
    const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'repo', Prefix: 'mp/' }));
    expect(listed.Uploads?.map((u) => [u.Key, u.UploadId])).toEqual([['mp/a', UploadId]]);
    expect(await plain.openUploads('repo')).toEqual([UploadId]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'repo', Key: 'mp/a', UploadId }));
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'repo' }))).Uploads ?? []).toEqual([]);
    expect(await plain.openUploads('repo')).toEqual([]);
  });

  it('stores nothing when a PUT body is cut short (client killed mid-request), as S3 does', async () => {
    const s3 = client(plain);
    // An anonymous PUT (s3rver allows them) that promises 1,000,000 bytes and sends 1,000.
    await new Promise<void>((resolve) => {
      const req = request(`${plain.endpoint}/repo/cut`, {
        method: 'PUT',
        headers: { 'content-length': '1000000' },
      });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(1000));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 200);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await expect(read(s3, 'cut')).rejects.toMatchObject({ name: 'NoSuchKey' });
  });

  it('keeps its data across kill and restart on the same port', async () => {
    const server = await startS3Server({ buckets: ['repo'] });
    try {
      const s3 = client(server);
      await s3.send(new PutObjectCommand({ Bucket: 'repo', Key: 'k', Body: 'kept' }));
      const pid = server.pid;
      await server.kill();
      expect(server.pid).toBeUndefined();
      await expect(read(s3, 'k')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      await server.restart();
      expect(server.pid).not.toBe(pid);
      expect(await read(s3, 'k')).toBe('kept');
    } finally {
      await server.stop();
    }
  });

  it('fails the next requests on demand', async () => {
    const s3 = client(plain, 1);
    await plain.failNextRequests(1, 503);
    await expect(read(s3, 'inm')).rejects.toMatchObject({ $metadata: { httpStatusCode: 503 } });
    expect(await read(s3, 'inm')).toBe('two');
  });
});
