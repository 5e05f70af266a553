/**
 * createS3Client, the one S3 client factory: every call has a request timeout that throws (the
 * SDK's default only logs a warning), apart from the connect and idle timeouts.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { S3Storage } from '../../storage/s3-storage.ts';
import { StorageUnavailableError } from '../../storage/storage.ts';
import { useS3rverCredentials } from '../support/s3-server.ts';

useS3rverCredentials();

describe('createS3Client', () => {
  it('fails a request that is not answered within requestTimeoutMs, well before the idle timeout', async () => {
    const sockets: Socket[] = [];
    // Accepts and reads the request, then keeps the connection open without answering.
    const hung: Server = createServer((socket) => {
      sockets.push(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    const { port } = hung.address() as { port: number };
    try {
      const storage = new S3Storage({
        bucket: 'repo',
        endpoint: `http://127.0.0.1:${port}`,
        forcePathStyle: true,
        region: 'us-east-1',
        maxAttempts: 1,
        idleTimeoutMs: 30_000,
        requestTimeoutMs: 300,
      });
      const started = Date.now();
      const error = await storage.head('v1/k').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StorageUnavailableError);
      expect((error as Error).message).toMatch(/ETIMEDOUT|TimeoutError/);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      for (const socket of sockets) socket.destroy();
      hung.close();
    }
  });
});
