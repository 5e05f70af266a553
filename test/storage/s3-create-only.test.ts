// Create-only ingest, from the host's side: every write the agent makes carries If-None-Match: *
// (PutObject and CompleteMultipartUpload alike), so a server enforcing the ingest bucket policy's
// host denies accepts it, while an unconditional write (an overwrite) is refused.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import type { S3Client } from '@aws-sdk/client-s3';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeObject } from '../../agent/object-store.ts';
import { pushWalFile, WalConflictError } from '../../agent/wal/push.ts';
import { parseStorageUrl } from '../../storage/open-storage.ts';
import { S3Storage } from '../../storage/s3-storage.ts';
import { AccessDeniedError, ObjectExistsError } from '../../storage/storage.ts';
import { type S3Server, startS3Server, useS3rverCredentials } from '../support/s3-server.ts';
import { walSegment } from '../support/wal-segment.ts';

useS3rverCredentials();
const MIB = 1024 * 1024;

interface Sent {
  readonly command: string;
  readonly ifNoneMatch: string | undefined;
}

/** Records every request the client sends: the command's name and its If-None-Match header. */
function capture(client: S3Client): Sent[] {
  const sent: Sent[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers ?? {};
      const name = Object.keys(headers).find((h) => h.toLowerCase() === 'if-none-match');
      sent.push({ command: String(context.commandName), ifNoneMatch: name ? headers[name] : undefined });
      return next(args);
    },
    { step: 'finalizeRequest', name: 'pgkeepCaptureIfNoneMatch' },
  );
  return sent;
}

let server: S3Server;
let work: string;
let recipients: string[];
let count = 0;
beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest'], createOnlyPolicy: true });
  work = await mkdtemp(join(tmpdir(), 'pgkeep-create-only-'));
  recipients = [await identityToRecipient(await generateX25519Identity())];
});
afterAll(async () => {
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function hostStorage(): { storage: S3Storage; sent: Sent[] } {
  count += 1;
  const parsed = parseStorageUrl(`${server.url('ingest', `h${count}/`)}&part-size-mib=5`);
  if (parsed.scheme !== 's3') throw new Error('not s3');
  const storage = new S3Storage(parsed);
  return { storage, sent: capture(storage.client) };
}

const writes = (sent: Sent[]) =>
  sent.filter((s) => ['PutObjectCommand', 'CompleteMultipartUploadCommand'].includes(s.command));

describe('create-only writes to ingest', () => {
  it('sends If-None-Match: * on PutObject and on CompleteMultipartUpload (lib-storage passes it through)', async () => {
    const { storage, sent } = hostStorage();
    const small = randomBytes(1000);
    const large = randomBytes(12 * MIB + 5);
    await storeObject({ storage, key: 'v1/c/small.zst.age', source: Readable.from([small]), recipients });
    await storeObject({ storage, key: 'v1/c/large.zst.age', source: Readable.from([large]), recipients });
    expect(sent.map((s) => s.command)).toContain('CompleteMultipartUploadCommand');
    expect(sent.map((s) => s.command)).toContain('UploadPartCommand');
    expect(writes(sent).length).toBe(2);
    for (const write of writes(sent)) expect(write, write.command).toEqual({ ...write, ifNoneMatch: '*' });
  });

  it('is what the policy lets through: a write without If-None-Match is refused, and nothing is stored', async () => {
    const { storage } = hostStorage();
    await expect(storage.put('v1/c/overwrite', Readable.from([Buffer.from('x')]))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    expect(await storage.head('v1/c/overwrite')).toBeUndefined();
  });

  it('finds an existing key before writing: the second put sends no write at all and the first object stays', async () => {
    const { storage, sent } = hostStorage();
    await storeObject({ storage, key: 'v1/c/k', source: Readable.from([Buffer.from('first')]), recipients });
    const before = await buffer(await storage.get('v1/c/k'));
    sent.length = 0;
    await expect(
      storeObject({ storage, key: 'v1/c/k', source: Readable.from([Buffer.from('second')]), recipients }),
    ).rejects.toBeInstanceOf(ObjectExistsError);
    expect(writes(sent)).toEqual([]);
    expect(sent.map((s) => s.command)).toEqual(['HeadObjectCommand']);
    expect((await buffer(await storage.get('v1/c/k'))).equals(before)).toBe(true);
  });

  it('wal-push: an identical re-push still succeeds, different content is a conflict, and every write was create-only', async () => {
    const { storage, sent } = hostStorage();
    const name = '000000010000000000000007';
    const path = join(work, name);
    await writeFile(path, walSegment(name, 7311111111111111111n));
    const options = { storage, cluster: 'c', recipients, path, dataDir: work };
    expect((await pushWalFile(options)).outcome).toBe('stored');
    expect((await pushWalFile(options)).outcome).toBe('already-stored');
    await writeFile(path, walSegment(name, 7311111111111111111n));
    await expect(pushWalFile(options)).rejects.toBeInstanceOf(WalConflictError);
    expect(writes(sent).length).toBeGreaterThan(0);
    for (const write of writes(sent)) expect(write.ifNoneMatch, write.command).toBe('*');
  });
});
