/**
 * The single-PutObject copy without a read-back: the target checks the body's Content-MD5 as it
 * stores it, a create-only PutObject replaces the HEAD before it, and a copy is still never
 * replaced. Real s3rver processes on 127.0.0.1 (one honouring If-None-Match: *, like AWS S3), a
 * fault proxy in front of the target to damage a body on its way.
 */
import { createHash, randomBytes } from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CopyIntegrityError,
  replicateObject,
  type S3ObjectRef,
  TargetConflictError,
} from '../../../lambdas/lib/s3-copy.ts';
import { createS3Client } from '../../../storage/s3-storage.ts';
import { type FaultProxy, startFaultProxy } from '../../support/fault-proxy.ts';
import { type S3Server, startS3Server, useS3rverCredentials } from '../../support/s3-server.ts';

useS3rverCredentials();

const MIB = 1024 * 1024;
const PART = 16 * MIB;

let sourceServer: S3Server;
let targetServer: S3Server;
let proxy: FaultProxy;
let sourceClient: S3Client;
let targetClient: S3Client;

beforeAll(async () => {
  [sourceServer, targetServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['target'], conditionalWrites: true }),
  ]);
  proxy = await startFaultProxy(targetServer.endpoint);
  sourceClient = createS3Client({ endpoint: sourceServer.endpoint, forcePathStyle: true });
  // The S3-compatible targets' setting: no SDK checksums, only what the copy sends itself.
  targetClient = createS3Client({ endpoint: proxy.endpoint, forcePathStyle: true });
});

afterAll(async () => {
  sourceClient?.destroy();
  targetClient?.destroy();
  await proxy?.stop();
  await Promise.all([sourceServer?.stop(), targetServer?.stop()]);
});

const source = (key: string): S3ObjectRef => ({ client: sourceClient, bucket: 'ingest', key });
const target = (key: string): S3ObjectRef => ({ client: targetClient, bucket: 'target', key });
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

async function put(object: S3ObjectRef, bytes: Buffer): Promise<void> {
  await object.client.send(new PutObjectCommand({ Bucket: object.bucket, Key: object.key, Body: bytes }));
}

async function read(object: S3ObjectRef): Promise<Buffer | undefined> {
  try {
    const out = await object.client.send(new GetObjectCommand({ Bucket: object.bucket, Key: object.key }));
    return Buffer.from(await out.Body!.transformToByteArray());
  } catch {
    return undefined;
  }
}

describe('replicateObject with one PutObject', () => {
  it('copies a key a listing lacked without a HEAD first where If-None-Match is honoured, confirms with one HEAD, and skips an equal copy', async () => {
    const key = 'v1/c/wal/000000010000000000000001';
    const bytes = randomBytes(3 * MIB);
    await put(source(key), bytes);
    const expected = { sizeBytes: bytes.length, sha256: sha256(bytes) };

    const heads = proxy.operations.HEAD ?? 0;
    const first = await replicateObject(source(key), target(key), expected, {
      partSizeBytes: PART,
      createOnly: true,
      listedAbsent: true,
    });
    expect(first).toMatchObject({
      action: 'copied',
      before: 'absent',
      copy: { multipart: false, sha256: expected.sha256 },
      verification: { status: 'ok', method: 'content-md5' },
    });
    expect((proxy.operations.HEAD ?? 0) - heads).toBe(1);
    expect((await read(target(key)))?.equals(bytes)).toBe(true);

    // Listed absent a moment ago, copied since: the create-only PutObject is refused (412), and
    // the copy there is read and holds the same bytes.
    const again = await replicateObject(source(key), target(key), expected, {
      partSizeBytes: PART,
      createOnly: true,
      listedAbsent: true,
    });
    expect(again).toEqual({
      action: 'skipped',
      verification: { status: 'ok', sizeBytes: bytes.length, method: 'read' },
    });
  });

  it('never replaces a copy when the source changed after it was copied (a tampered source)', async () => {
    const key = 'v1/c/wal/000000010000000000000002';
    const original = randomBytes(MIB);
    await put(source(key), original);
    await replicateObject(
      source(key),
      target(key),
      { sizeBytes: original.length },
      { createOnly: true, listedAbsent: true },
    );

    // The host overwrites its segment with other bytes of the same size; WAL has no manifest,
    // so the copy the refused PutObject found is checked against the sha256 of what was just read.
    const forged = randomBytes(MIB);
    await put(source(key), forged);
    const refused = await replicateObject(
      source(key),
      target(key),
      { sizeBytes: forged.length },
      { createOnly: true, listedAbsent: true },
    ).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TargetConflictError);
    expect((refused as Error).message).toMatch(
      /already holds other bytes .*hash-mismatch.*kept and not replaced/,
    );
    expect((await read(target(key)))?.equals(original)).toBe(true);
  });

  it('sends nothing when the source does not match the manifest', async () => {
    const key = 'v1/c/logical/app/b/dump.zst.age';
    const bytes = randomBytes(2 * MIB);
    await put(source(key), bytes);
    const puts = proxy.operations.PUT ?? 0;
    const refused = await replicateObject(
      source(key),
      target(key),
      { sizeBytes: bytes.length, sha256: sha256(randomBytes(8)) },
      { createOnly: true },
    ).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(CopyIntegrityError);
    expect((refused as Error).message).toMatch(/expected .* bytes with sha256 .*nothing was written/);
    expect(proxy.operations.PUT ?? 0).toBe(puts);
    expect(await read(target(key))).toBeUndefined();
  });

  it("works the same with the SDK computing its own checksums too (the AWS targets' when-supported)", async () => {
    const key = 'v1/c/wal/000000010000000000000004';
    const bytes = randomBytes(MIB);
    await put(source(key), bytes);
    const aws = createS3Client({
      endpoint: proxy.endpoint,
      forcePathStyle: true,
      checksum: 'when-supported',
    });
    try {
      const to = { client: aws, bucket: 'target', key };
      const copied = await replicateObject(
        source(key),
        to,
        { sizeBytes: bytes.length, sha256: sha256(bytes) },
        { createOnly: true },
      );
      expect(copied).toMatchObject({ action: 'copied', verification: { method: 'content-md5' } });
      expect((await read(target(key)))?.equals(bytes)).toBe(true);
    } finally {
      aws.destroy();
    }
  });

  it('a body damaged on its way to the target is refused by the target (Content-MD5), not stored', async () => {
    const key = 'v1/c/wal/000000010000000000000003';
    const bytes = randomBytes(2 * MIB);
    await put(source(key), bytes);
    const expected = { sizeBytes: bytes.length, sha256: sha256(bytes) };

    proxy.set({ method: 'PUT', corruptRequestBody: true });
    const refused = await replicateObject(source(key), target(key), expected, { createOnly: true }).catch(
      (e: unknown) => e,
    );
    proxy.set({});
    expect((refused as Error).name).toBe('BadDigest');
    expect(proxy.counts.corrupted).toBeGreaterThan(0);
    expect(await read(target(key))).toBeUndefined();

    // The next attempt (the next run) copies it.
    const copied = await replicateObject(source(key), target(key), expected, { createOnly: true });
    expect(copied).toMatchObject({ action: 'copied', verification: { method: 'content-md5' } });
    expect((await read(target(key)))?.equals(bytes)).toBe(true);
  });
});
