import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage, parseStorageUrl, probeStorage } from '../../storage/open-storage.ts';
import { S3Storage, type S3StorageOptions } from '../../storage/s3-storage.ts';
import {
  AccessDeniedError,
  ObjectExistsError,
  ObjectNotFoundError,
  RepositoryNotFoundError,
  type Storage,
  StorageError,
  StorageUnavailableError,
} from '../../storage/storage.ts';
import { type S3Server, startS3Server, useS3rverCredentials } from '../support/s3-server.ts';
import { chunkedStream, describeStorageContract, listAll, readAll } from './storage-contract.ts';

useS3rverCredentials();
const MIB = 1024 * 1024;

let server: S3Server;
beforeAll(async () => {
  server = await startS3Server({ buckets: ['repo'] });
});
afterAll(async () => {
  await server?.stop();
});

let count = 0;
/** A fresh prefix in the shared bucket, with 5 MiB parts (S3's minimum) two at a time, so tests see several parts in flight. */
/** The S3 driver itself (openStorage defers it behind a wrapper that loads the SDK on first use). */
function s3From(url: string): S3Storage {
  const parsed = parseStorageUrl(url);
  if (parsed.scheme !== 's3') throw new Error(`not an s3 URL: ${url}`);
  return new S3Storage(parsed);
}

function freshStorage(extra = ''): S3Storage {
  count += 1;
  return s3From(`${server.url('repo', `t${count}/`)}&part-size-mib=5&queue-size=2${extra}`);
}

async function openUploads(storage: S3Storage): Promise<string[]> {
  const listed = await storage.client.send(
    new ListMultipartUploadsCommand({ Bucket: storage.bucket, Prefix: storage.prefix }),
  );
  return (listed.Uploads ?? []).map((u) => `${u.Key} ${u.UploadId}`);
}

describeStorageContract(
  's3',
  async () => {
    const storage = freshStorage();
    return {
      storage,
      leftovers: async () => [...(await openUploads(storage)), ...(await server.openUploads('repo'))],
    };
  },
  { largeObjectBytes: 12 * MIB + 123 },
);

/** Calls `operation` and returns what it rejected with and how long that took. */
async function failure(operation: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = Date.now();
  try {
    await operation();
  } catch (error) {
    return { error, ms: Date.now() - started };
  }
  throw new Error('expected the operation to fail');
}

function allOperations(storage: Storage): Array<[string, () => Promise<unknown>]> {
  return [
    ['put', () => storage.put('v1/k', Readable.from([Buffer.from('x')]))],
    ['put ifAbsent', () => storage.put('v1/k', Readable.from([Buffer.from('x')]), { ifAbsent: true })],
    ['get', () => storage.get('v1/k')],
    ['head', () => storage.head('v1/k')],
    ['list', () => listAll(storage, 'v1/')],
    ['delete', () => storage.delete('v1/k')],
  ];
}

describe('s3 storage against an unreachable or failing endpoint', () => {
  it('fails every operation with StorageUnavailableError within seconds when nothing listens', async () => {
    const down = await startS3Server({ buckets: ['repo'] });
    const storage = openStorage(down.url('repo', 'p/'));
    await down.stop();
    for (const [name, operation] of allOperations(storage)) {
      const { error, ms } = await failure(operation);
      expect(error, name).toBeInstanceOf(StorageUnavailableError);
      expect((error as Error).message, name).toMatch(
        /unreachable or failing \(ECONNREFUSED\).*check the endpoint/,
      );
      expect(ms, name).toBeLessThan(10_000);
    }
    await expect(probeStorage(storage)).rejects.toThrow(StorageUnavailableError);
  });

  it('gives up on a server that accepts connections but never answers, after 3 idle timeouts', async () => {
    const sockets: Socket[] = [];
    const hung: Server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    const { port } = hung.address() as { port: number };
    try {
      const options: S3StorageOptions = {
        bucket: 'repo',
        endpoint: `http://127.0.0.1:${port}`,
        forcePathStyle: true,
        idleTimeoutMs: 500,
      };
      const storage = new S3Storage(options);
      const { error, ms } = await failure(() => storage.head('v1/k'));
      expect(error).toBeInstanceOf(StorageUnavailableError);
      expect((error as Error).message).toContain('TimeoutError');
      expect(ms).toBeGreaterThanOrEqual(1_400);
      expect(ms).toBeLessThan(5_000);
      const put = await failure(() => storage.put('v1/k', chunkedStream(randomBytes(100_000))));
      expect(put.error).toBeInstanceOf(StorageUnavailableError);
    } finally {
      for (const socket of sockets) socket.destroy();
      hung.close();
    }
  });

  it('retries server errors: two 503s are absorbed, three are StorageUnavailableError', async () => {
    const storage = freshStorage();
    await storage.put('v1/k', Readable.from([Buffer.from('kept')]));
    await server.failNextRequests(2, 503);
    expect(await text(await storage.get('v1/k'))).toBe('kept');
    await server.failNextRequests(3, 500);
    const { error } = await failure(() => storage.get('v1/k'));
    expect(error).toBeInstanceOf(StorageUnavailableError);
    expect((error as Error).message).toContain('HTTP 500 InternalError');
  });

  it('fails a multipart put when the provider dies mid-upload, and works again after restart', async () => {
    const own = await startS3Server({ buckets: ['repo'] });
    try {
      const storage = openStorage(`${own.url('repo', 'p/')}&part-size-mib=5`);
      const data = randomBytes(40 * MIB);
      let sent = 0;
      const body = chunkedStream(data);
      body.on('data', (chunk: Buffer) => {
        sent += chunk.length;
        if (sent >= 12 * MIB && sent - chunk.length < 12 * MIB) void own.kill();
      });
      const { error, ms } = await failure(() => storage.put('v1/big', body));
      expect(error).toBeInstanceOf(StorageUnavailableError);
      expect(ms).toBeLessThan(15_000);
      expect(body.destroyed).toBe(true);
      await own.restart();
      expect(await storage.head('v1/big')).toBeUndefined();
      await storage.put('v1/big', chunkedStream(data.subarray(0, 11 * MIB)));
      expect((await storage.head('v1/big'))?.sizeBytes).toBe(11 * MIB);
    } finally {
      await own.stop();
    }
  });
});

describe('s3 storage when things break mid-stream', () => {
  it('fails a read with StorageUnavailableError when the provider dies mid-body', async () => {
    const own = await startS3Server({ buckets: ['repo'] });
    try {
      const storage = openStorage(own.url('repo', 'p/'));
      await storage.put('v1/big', chunkedStream(randomBytes(24 * MIB)));
      const body = await storage.get('v1/big');
      // A slow consumer (~6 MB/s), so most of the body is still on the server when it dies.
      const slow = new Writable({ write: (_chunk, _encoding, callback) => setTimeout(callback, 10) });
      const copying = pipeline(body, slow).catch((e: unknown) => e);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await own.kill();
      const error = await copying;
      expect(error).toBeInstanceOf(StorageUnavailableError);
    } finally {
      await own.stop();
    }
  });

  it('refuses a stream larger than 10,000 parts early, naming part-size-mib, and aborts the upload', async () => {
    const storage = freshStorage();
    // Pretend the part limit is reached after 2 parts instead of 10,000 (50 GB of test data).
    Object.defineProperty(storage, 'maxObjectBytes', { value: 10 * MIB });
    const body = chunkedStream(randomBytes(16 * MIB));
    const error = await storage.put('v1/huge', body).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/is larger than .* raise part-size-mib in the repository URL/);
    expect(body.destroyed).toBe(true);
    expect(await storage.head('v1/huge')).toBeUndefined();
    expect(await openUploads(storage)).toEqual([]);
  });
});

describe('s3 storage against a wrong endpoint', () => {
  it('never reports "missing" when the endpoint answers bare 404s (a website or proxy, not S3)', async () => {
    const web = createHttpServer((_request, response) => {
      response.statusCode = 404;
      response.end();
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    const { port } = web.address() as { port: number };
    try {
      const storage = openStorage(`s3://repo/p/?endpoint=http://127.0.0.1:${port}&path-style=true`);
      for (const [name, operation] of allOperations(storage)) {
        const { error } = await failure(operation);
        expect(error, name).toBeInstanceOf(StorageError);
        expect(error, name).not.toBeInstanceOf(ObjectNotFoundError);
        expect((error as Error).message, name).toMatch(/answered HTTP 404 without an S3 error code/);
      }
    } finally {
      web.close();
    }
  });
});

describe('s3 storage against a missing bucket or bad credentials', () => {
  it('reports a missing bucket as RepositoryNotFoundError, never as a missing object', async () => {
    const storage = openStorage(server.url('no-such-bucket', 'p/'));
    for (const [name, operation] of allOperations(storage)) {
      const { error } = await failure(operation);
      expect(error, name).toBeInstanceOf(RepositoryNotFoundError);
      expect((error as Error).message, name).toBe(
        `bucket "no-such-bucket" does not exist at ${server.endpoint}: create it, or fix the bucket name in the repository URL`,
      );
    }
    await expect(probeStorage(storage, 'v1/')).rejects.toThrow(RepositoryNotFoundError);
  });

  it('reports unknown credentials as AccessDeniedError naming the variable to fix', async () => {
    const saved = process.env.AWS_ACCESS_KEY_ID;
    process.env.AWS_ACCESS_KEY_ID = 'NOT-S3RVER';
    try {
      const storage = openStorage(server.url('repo', 'p/'));
      await expect(probeStorage(storage)).rejects.toThrow(AccessDeniedError);
      await expect(probeStorage(storage)).rejects.toThrow(/check AWS_ACCESS_KEY_ID/);
      await expect(storage.head('v1/k')).rejects.toThrow(AccessDeniedError);
    } finally {
      process.env.AWS_ACCESS_KEY_ID = saved;
    }
  });

  it('reports missing credentials as AccessDeniedError without trying for minutes', async () => {
    const saved = { ...process.env };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/credentials';
    process.env.AWS_CONFIG_FILE = '/nonexistent/config';
    try {
      const storage = openStorage(server.url('repo', 'p/'));
      const { error, ms } = await failure(() => probeStorage(storage));
      expect(error).toBeInstanceOf(AccessDeniedError);
      expect((error as Error).message).toMatch(/no S3 credentials found .*AWS_ACCESS_KEY_ID/);
      expect(ms).toBeLessThan(10_000);
    } finally {
      process.env = saved;
    }
  });
});

describe('s3 create-only puts', () => {
  /** A body whose first read waits for `before()`: a competing writer landing between the HEAD check and the PUT. */
  function raceBody(data: Buffer, before: () => Promise<void>): Readable {
    return Readable.from(
      (async function* () {
        await before();
        yield* chunkedStream(data);
      })(),
      { objectMode: false },
    );
  }

  it('maps 412 from a provider with conditional writes to ObjectExistsError and keeps the winner (single and multipart)', async () => {
    const conditional = await startS3Server({ buckets: ['repo'], conditionalWrites: true });
    try {
      const storage = s3From(`${conditional.url('repo', 'p/')}&part-size-mib=5`);
      for (const size of [1000, 12 * MIB]) {
        const key = `v1/wal/race-${size}`;
        const body = raceBody(randomBytes(size), () =>
          storage.put(key, Readable.from([Buffer.from('winner')])),
        );
        const error = await storage.put(key, body, { ifAbsent: true }).catch((e: unknown) => e);
        expect(error, `${size} bytes`).toBeInstanceOf(ObjectExistsError);
        expect(await text(await storage.get(key))).toBe('winner');
      }
      expect(await openUploads(storage)).toEqual([]);
      expect(await conditional.openUploads('repo')).toEqual([]);
    } finally {
      await conditional.stop();
    }
  });

  it('without provider support (stock s3rver) the HEAD check is not atomic: a racing writer is overwritten', async () => {
    const storage = freshStorage();
    const body = raceBody(Buffer.from('late'), () =>
      storage.put('v1/wal/race', Readable.from([Buffer.from('early')])),
    );
    await storage.put('v1/wal/race', body, { ifAbsent: true });
    expect(await text(await storage.get('v1/wal/race'))).toBe('late');
  });

  it('conditional-writes=false sends no If-None-Match (for providers that reject it) but still checks first', async () => {
    const conditional = await startS3Server({ buckets: ['repo'], conditionalWrites: true });
    try {
      const storage = openStorage(`${conditional.url('repo', 'p/')}&conditional-writes=false`);
      await storage.put('v1/a', Readable.from([Buffer.from('a')]), { ifAbsent: true });
      await expect(
        storage.put('v1/a', Readable.from([Buffer.from('b')]), { ifAbsent: true }),
      ).rejects.toThrow(ObjectExistsError);
      const body = raceBody(Buffer.from('late'), () =>
        storage.put('v1/b', Readable.from([Buffer.from('early')])),
      );
      await storage.put('v1/b', body, { ifAbsent: true });
      expect(await text(await storage.get('v1/b'))).toBe('late');
    } finally {
      await conditional.stop();
    }
  });
});

describe('s3 storage options', () => {
  it('keeps keys under the URL prefix and shows no credentials', async () => {
    const storage = freshStorage();
    await storage.put('v1/x', Readable.from([Buffer.from('x')]));
    const root = openStorage(server.url('repo', ''));
    expect((await listAll(root, storage.prefix)).map((o) => o.key)).toEqual([`${storage.prefix}v1/x`]);
    expect(storage.displayUrl).toBe(
      `s3://repo/${storage.prefix}?endpoint=${server.endpoint}&path-style=true&region=us-east-1`,
    );
    expect(openStorage('s3://my-bucket').displayUrl).toBe('s3://my-bucket/');
  });

  it('derives the largest object from the part size', () => {
    expect(new S3Storage({ bucket: 'b' }).maxObjectBytes).toBe(16 * MIB * 10_000);
    expect(new S3Storage({ bucket: 'b', partSizeMiB: 525 }).maxObjectBytes).toBeGreaterThanOrEqual(
      5 * 1024 ** 4,
    );
    expect(() => new S3Storage({ bucket: 'b', partSizeMiB: 4 })).toThrow(/outside S3's limits/);
  });

  it('stores intact with checksum=when-supported too (lib-storage sends buffers, not aws-chunked bodies)', async () => {
    const storage = freshStorage('&checksum=when-supported');
    const data = randomBytes(11 * MIB);
    await storage.put('v1/x', chunkedStream(data));
    expect((await readAll(await storage.get('v1/x'))).equals(data)).toBe(true);
    await storage.put('v1/small', Readable.from([Buffer.from('small')]));
    expect(await text(await storage.get('v1/small'))).toBe('small');
  });

  it('parses the URL options the driver uses', () => {
    expect(parseStorageUrl(server.url('repo', 'a/b'))).toMatchObject({
      scheme: 's3',
      bucket: 'repo',
      prefix: 'a/b/',
      endpoint: server.endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      checksum: 'when-required',
      partSizeMiB: 16,
    });
  });
});
