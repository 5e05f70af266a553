/**
 * The streaming copy and its verification between two real S3-compatible servers (two s3rver
 * processes on 127.0.0.1, standing for two providers).
 */
import { createHash, randomBytes } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  abortCopy,
  type CompletedPart,
  CopyIntegrityError,
  completeCopy,
  copyObject,
  copyParts,
  objectIn,
  partNumberBatches,
  planCopy,
  replicateObject,
  type S3ObjectRef,
  SourceChangedError,
  startCopy,
  TargetConflictError,
} from '../../../lambdas/lib/s3-copy.ts';
import { verifyCopy } from '../../../lambdas/lib/verify-copy.ts';
import { createS3Client } from '../../../storage/s3-storage.ts';
import { type S3Server, startS3Server, useS3rverCredentials } from '../../support/s3-server.ts';

useS3rverCredentials();

const MIB = 1024 * 1024;
const PART = 5 * MIB;

let sourceServer: S3Server;
let targetServer: S3Server;
let sourceClient: S3Client;
let targetClient: S3Client;

beforeAll(async () => {
  [sourceServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['target'] }),
  ]);
  sourceClient = createS3Client({ endpoint: sourceServer.endpoint, forcePathStyle: true });
  targetClient = createS3Client({ endpoint: targetServer.endpoint, forcePathStyle: true });
});

afterAll(async () => {
  sourceClient?.destroy();
  targetClient?.destroy();
  await Promise.all([sourceServer?.stop(), targetServer?.stop()]);
});

const source = (key: string): S3ObjectRef => ({ client: sourceClient, bucket: 'ingest', key });
const target = (key: string): S3ObjectRef => ({ client: targetClient, bucket: 'target', key });
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

async function put(object: S3ObjectRef, bytes: Buffer): Promise<void> {
  await object.client.send(new PutObjectCommand({ Bucket: object.bucket, Key: object.key, Body: bytes }));
}

async function read(object: S3ObjectRef): Promise<Buffer> {
  const out = await object.client.send(new GetObjectCommand({ Bucket: object.bucket, Key: object.key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function exists(object: S3ObjectRef): Promise<boolean> {
  try {
    await object.client.send(new HeadObjectCommand({ Bucket: object.bucket, Key: object.key }));
    return true;
  } catch {
    return false;
  }
}

describe('planCopy', () => {
  it('splits an object into parts, the last one shorter, numbered from 1', () => {
    expect(planCopy(12 * MIB + 1, PART)).toEqual({
      sizeBytes: 12 * MIB + 1,
      partSizeBytes: PART,
      multipart: true,
      parts: [
        { partNumber: 1, start: 0, end: PART - 1 },
        { partNumber: 2, start: PART, end: 2 * PART - 1 },
        { partNumber: 3, start: 2 * PART, end: 12 * MIB },
      ],
    });
    expect(planCopy(PART, PART)).toMatchObject({
      multipart: false,
      parts: [{ partNumber: 1, start: 0, end: PART - 1 }],
    });
    expect(planCopy(0)).toMatchObject({ multipart: false, parts: [] });
  });

  it('raises the part size so no object needs more than 10,000 parts', () => {
    const plan = planCopy(200 * 1024 * MIB, 16 * MIB);
    expect(plan.partSizeBytes).toBe(21 * MIB);
    expect(plan.parts).toHaveLength(Math.ceil((200 * 1024) / 21));
    expect(() => planCopy(10 * MIB, MIB)).toThrow(/S3 takes parts from 5242880/);
  });

  it('hands out part numbers in batches for a Map state', () => {
    expect(partNumberBatches({ partCount: 5 }, 2)).toEqual([[1, 2], [3, 4], [5]]);
  });
});

describe('copyObject', () => {
  it('copies a small object with one PutObject and returns its sha256', async () => {
    const bytes = randomBytes(1 * MIB + 17);
    await put(source('small'), bytes);
    const parts: CompletedPart[] = [];
    const result = await copyObject(source('small'), target('small'), {
      partSizeBytes: PART,
      onPart: (p) => parts.push(p),
    });
    expect(result).toMatchObject({
      sizeBytes: bytes.length,
      sha256: sha256(bytes),
      multipart: false,
      partCount: 1,
    });
    expect(parts).toHaveLength(1);
    expect((await read(target('small'))).equals(bytes)).toBe(true);
  });

  it('copies a multi-part object part by part, hashing in order while parts run in parallel', async () => {
    const bytes = randomBytes(20 * MIB + 12345);
    await put(source('large'), bytes);
    const result = await copyObject(source('large'), target('large'), {
      partSizeBytes: PART,
      concurrency: 3,
    });
    expect(result).toMatchObject({
      sizeBytes: bytes.length,
      sha256: sha256(bytes),
      multipart: true,
      partCount: 5,
    });
    expect((await read(target('large'))).equals(bytes)).toBe(true);
    expect(await targetServer.openUploads('target')).toEqual([]);
  });

  it('copies an empty object', async () => {
    await put(source('empty'), Buffer.alloc(0));
    const result = await copyObject(source('empty'), target('empty'));
    expect(result).toMatchObject({ sizeBytes: 0, sha256: sha256(Buffer.alloc(0)) });
    expect((await read(target('empty'))).length).toBe(0);
  });

  it('leaves nothing at the target when the bytes do not match the manifest', async () => {
    const large = randomBytes(11 * MIB);
    await put(source('wrong-large'), large);
    const wrong = { sizeBytes: large.length, sha256: 'f'.repeat(64) };
    await expect(
      copyObject(source('wrong-large'), target('wrong-large'), { partSizeBytes: PART, expected: wrong }),
    ).rejects.toThrow(CopyIntegrityError);
    expect(await exists(target('wrong-large'))).toBe(false);
    expect(await targetServer.openUploads('target')).toEqual([]);

    const small = randomBytes(3 * MIB);
    await put(source('wrong-small'), small);
    const error = await copyObject(source('wrong-small'), target('wrong-small'), {
      expected: { sizeBytes: small.length, sha256: 'e'.repeat(64) },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CopyIntegrityError);
    expect((error as Error).message).toMatch(/expected 3145728 bytes with sha256 eeee.*nothing was written/);
    expect(await exists(target('wrong-small'))).toBe(false);

    await expect(
      copyObject(source('wrong-small'), target('wrong-small'), {
        expected: { sizeBytes: 1, sha256: sha256(small) },
      }),
    ).rejects.toThrow(/has 3145728 bytes, expected 1; not copied/);
  });

  it('refuses to copy a prefix when the source is larger than it was listed with', async () => {
    await put(source('grown'), randomBytes(12 * MIB));
    for (const sizeBytes of [3 * MIB, 11 * MIB]) {
      await expect(
        copyObject(source('grown'), target('grown'), { partSizeBytes: PART, sizeBytes }),
      ).rejects.toThrow(SourceChangedError);
    }
    expect(await exists(target('grown'))).toBe(false);
    expect(await targetServer.openUploads('target')).toEqual([]);
  });

  it('retries a PutObject or a part that the target failed, from a fresh GET, with the hash still right', async () => {
    const small = randomBytes(2 * MIB);
    await put(source('flaky-small'), small);
    await targetServer.failNextRequests(1, 500);
    const one = await copyObject(source('flaky-small'), target('flaky-small'));
    expect(one.sha256).toBe(sha256(small));
    expect((await read(target('flaky-small'))).equals(small)).toBe(true);

    const large = randomBytes(16 * MIB);
    await put(source('flaky-large'), large);
    let failed = false;
    const result = await copyObject(source('flaky-large'), target('flaky-large'), {
      partSizeBytes: PART,
      concurrency: 1,
      onPart: (part) => {
        // The upload of part 2 fails once; its bytes already hashed must not count twice.
        if (part.partNumber === 1 && !failed) {
          failed = true;
          void targetServer.failNextRequests(1, 500);
        }
      },
    });
    expect(result.sha256).toBe(sha256(large));
    expect((await read(target('flaky-large'))).equals(large)).toBe(true);
  });

  it('stops when its signal is aborted, and aborts the multipart upload', async () => {
    await put(source('cancelled'), randomBytes(16 * MIB));
    const controller = new AbortController();
    const reason = new Error('lambda is about to time out');
    const copying = copyObject(source('cancelled'), target('cancelled'), {
      partSizeBytes: PART,
      concurrency: 1,
      signal: controller.signal,
      onPart: () => controller.abort(reason),
    });
    await expect(copying).rejects.toBe(reason);
    expect(await exists(target('cancelled'))).toBe(false);
    expect(await targetServer.openUploads('target')).toEqual([]);
  });

  it('aborts the multipart upload when the source fails mid-copy', async () => {
    const own = await startS3Server({ buckets: ['ingest'] });
    const client = createS3Client({ endpoint: own.endpoint, forcePathStyle: true, maxAttempts: 1 });
    try {
      const from = { client, bucket: 'ingest', key: 'doomed' };
      await put(from, randomBytes(16 * MIB));
      let killed: Promise<void> | undefined;
      const copying = copyObject(from, target('doomed'), {
        partSizeBytes: PART,
        concurrency: 1,
        onPart: (part) => {
          if (part.partNumber === 1) killed = own.kill();
        },
      });
      await expect(copying).rejects.toThrow();
      await killed;
      expect(await exists(target('doomed'))).toBe(false);
      expect(await targetServer.openUploads('target')).toEqual([]);
    } finally {
      client.destroy();
      await own.stop();
    }
  });
});

describe('spread-out copy (startCopy, copyParts, completeCopy)', () => {
  it('copies batches of parts as separate steps would, then completes', async () => {
    const bytes = randomBytes(17 * MIB);
    await put(source('spread'), bytes);
    const state = await startCopy(source('spread'), target('spread'), { partSizeBytes: PART });
    expect(state).toMatchObject({ sizeBytes: bytes.length, partSizeBytes: PART, partCount: 4 });
    // The state passes through JSON between Lambda invocations.
    const passed = JSON.parse(JSON.stringify(state));
    const results: CompletedPart[] = [];
    for (const batch of partNumberBatches(passed, 3)) {
      results.push(
        ...(await copyParts(source('spread'), target('spread'), passed, batch, { concurrency: 2 })),
      );
    }
    await expect(completeCopy(target('spread'), passed, results.slice(1))).rejects.toThrow(
      /parts 1 were not copied; run copyParts for them first/,
    );
    await completeCopy(target('spread'), passed, results);
    expect((await read(target('spread'))).equals(bytes)).toBe(true);
    expect(await verifyCopy(target('spread'), { sizeBytes: bytes.length, sha256: sha256(bytes) })).toEqual({
      status: 'ok',
      sizeBytes: bytes.length,
      method: 'read',
    });
  });

  it('abortCopy removes a started upload and its parts', async () => {
    await put(source('abandoned'), randomBytes(11 * MIB));
    const state = await startCopy(source('abandoned'), target('abandoned'), { partSizeBytes: PART });
    await copyParts(source('abandoned'), target('abandoned'), state, [1]);
    expect(await targetServer.openUploads('target')).toEqual([state.uploadId]);
    await abortCopy(target('abandoned'), state.uploadId);
    await abortCopy(target('abandoned'), state.uploadId);
    expect(await targetServer.openUploads('target')).toEqual([]);
    expect(await exists(target('abandoned'))).toBe(false);
  });
});

describe('verifyCopy', () => {
  it('tells a good copy from a missing, short or corrupted one', async () => {
    const bytes = randomBytes(2 * MIB);
    const expected = { sizeBytes: bytes.length, sha256: sha256(bytes) };
    expect(await verifyCopy(target('verify'), expected)).toEqual({ status: 'missing' });

    await put(target('verify'), bytes.subarray(1));
    expect(await verifyCopy(target('verify'), expected)).toEqual({
      status: 'size-mismatch',
      expectedSizeBytes: bytes.length,
      actualSizeBytes: bytes.length - 1,
    });

    const corrupted = Buffer.from(bytes);
    corrupted[MIB] = (corrupted[MIB]! + 1) % 256;
    await put(target('verify'), corrupted);
    expect(await verifyCopy(target('verify'), expected)).toEqual({
      status: 'hash-mismatch',
      expectedSha256: expected.sha256,
      actualSha256: sha256(corrupted),
    });

    await put(target('verify'), bytes);
    expect(await verifyCopy(target('verify'), expected)).toEqual({
      status: 'ok',
      sizeBytes: bytes.length,
      method: 'read',
    });
    expect(await verifyCopy(target('verify'), { sizeBytes: bytes.length })).toMatchObject({
      method: 'size-only',
    });
  });

  it('rejects, not "missing", when the target cannot be reached', async () => {
    const down = createS3Client({ endpoint: 'http://127.0.0.1:9', forcePathStyle: true, maxAttempts: 1 });
    try {
      await expect(
        verifyCopy({ client: down, bucket: 'target', key: 'x' }, { sizeBytes: 1 }),
      ).rejects.toThrow();
    } finally {
      down.destroy();
    }
  });
});

describe('replicateObject', () => {
  it('copies what is missing, skips a verified copy on the next run, and never replaces a copy with other bytes', async () => {
    const bytes = randomBytes(6 * MIB);
    const expected = { sizeBytes: bytes.length, sha256: sha256(bytes) };
    const storage = { client: targetClient, bucket: 'target', prefix: 'replica/' };
    await put(source('v1/c/base/b/base.tar.zst.age'), bytes);
    const from = source('v1/c/base/b/base.tar.zst.age');
    const to = objectIn(storage, 'v1/c/base/b/base.tar.zst.age');
    expect(to.key).toBe('replica/v1/c/base/b/base.tar.zst.age');

    const first = await replicateObject(from, to, expected, { partSizeBytes: PART });
    expect(first).toMatchObject({
      action: 'copied',
      before: 'missing',
      copy: { multipart: true, sha256: expected.sha256 },
    });
    expect(first.action === 'copied' && first.verification?.status).toBe('ok');

    const again = await replicateObject(from, to, expected, { partSizeBytes: PART });
    expect(again).toEqual({
      action: 'skipped',
      verification: { status: 'ok', sizeBytes: bytes.length, method: 'read' },
    });

    const corrupted = Buffer.from(bytes);
    corrupted[0] = (corrupted[0]! + 1) % 256;
    await put(to, corrupted);
    // Other bytes at the target: the source may be what changed (a host overwrote it), so the
    // existing copy is kept and the conflict is reported, never settled by overwriting.
    const refused = await replicateObject(from, to, expected, { partSizeBytes: PART }).catch(
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(TargetConflictError);
    expect((refused as TargetConflictError).message).toMatch(
      /already holds other bytes .*hash-mismatch.*kept and not replaced/,
    );
    expect((await read(to)).equals(corrupted)).toBe(true);
  });
});
