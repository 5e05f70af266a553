/**
 * wal-push and wal-fetch, the real CLI, against s3rver behind the fault proxy: a blackholed
 * repository (connections accepted, never answered) ends within wal.retrySeconds with the
 * documented code, and a push killed after its upload but before it returned is retried by
 * PostgreSQL with success, the identical content being already stored.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walFilePrefix } from '../../../core/keys.ts';
import { parseStorageUrl } from '../../../storage/open-storage.ts';
import { S3Storage } from '../../../storage/s3-storage.ts';
import { type FaultProxy, startFaultProxy } from '../../support/fault-proxy.ts';
import { runPgkeep, startPgkeep } from '../../support/pgkeep-cli.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../../support/s3-server.ts';
import { walSegment } from '../../support/wal-segment.ts';

const SYSID = 7333333333333333333n;
const RETRY_SECONDS = 3;

let server: S3Server;
let proxy: FaultProxy;
let dir: string;
let dataDir: string;
let env: Record<string, string>;
let direct: S3Storage;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['repo'] });
  proxy = await startFaultProxy(server.endpoint, 20261130);
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-walfaults-'));
  dataDir = join(dir, 'data');
  for (const d of [dataDir, join(dataDir, 'pg_wal'), join(dataDir, 'global')]) await mkdir(d);
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(SYSID, 0);
  await writeFile(join(dataDir, 'global', 'pg_control'), control);
  const identity = await generateX25519Identity();
  await writeFile(join(dir, 'identity.txt'), `${identity}\n`, { mode: 0o600 });
  const config = {
    cluster: 'faults',
    repository: `s3://repo/p/?endpoint=${proxy.endpoint}&path-style=true`,
    recipients: [await identityToRecipient(identity)],
    identityFile: join(dir, 'identity.txt'),
    spoolDir: join(dir, 'spool'),
    wal: { retrySeconds: RETRY_SECONDS, asyncSeconds: 0, fetchPrefetch: 0 },
  };
  await writeFile(join(dir, 'pgkeep.yaml'), JSON.stringify(config), { mode: 0o600 });
  env = {
    PGKEEP_CONFIG: join(dir, 'pgkeep.yaml'),
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };
  const parsed = parseStorageUrl(`s3://repo/p/?endpoint=${server.endpoint}&path-style=true`);
  if (parsed.scheme !== 's3') throw new Error('not s3');
  direct = new S3Storage(parsed, undefined);
  process.env.AWS_ACCESS_KEY_ID ??= S3RVER_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY ??= S3RVER_CREDENTIALS.secretAccessKey;
});

afterAll(async () => {
  await proxy?.stop();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function segmentFile(name: string): Promise<string> {
  await writeFile(join(dataDir, 'pg_wal', name), walSegment(name, SYSID, 64 * 1024));
  return `pg_wal/${name}`;
}

async function storedKeys(name: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of direct.list(walFilePrefix('faults', name))) keys.push(object.key);
  return keys;
}

describe('WAL commands against a blackholed or crashing repository', () => {
  it('wal-push exits 4 within wal.retrySeconds when the repository never answers', async () => {
    const path = await segmentFile('000000010000000000000001');
    proxy.set({ blackhole: true });
    try {
      const started = Date.now();
      const result = await runPgkeep(['wal-push', path], env, dataDir);
      const seconds = (Date.now() - started) / 1000;
      expect(result.code).toBe(4);
      expect(result.stderr).toMatch(/unavailable/);
      // The retry time plus Node's start-up; far below the client's 60 s idle timeout.
      expect(seconds).toBeLessThan(RETRY_SECONDS + 4);
      expect(proxy.counts.blackholed).toBeGreaterThan(0);
    } finally {
      proxy.set({});
    }
    expect(await storedKeys('000000010000000000000001')).toEqual([]);
  });

  it('wal-fetch in archive recovery exits 255 within wal.retrySeconds when the repository never answers', async () => {
    const path = await segmentFile('000000010000000000000002');
    expect((await runPgkeep(['wal-push', path], env, dataDir)).code).toBe(0);
    const restoreDir = join(dir, 'restore');
    await mkdir(restoreDir);
    proxy.set({ blackhole: true });
    try {
      const started = Date.now();
      const result = await runPgkeep(
        ['wal-fetch', '000000010000000000000002', 'RECOVERYXLOG'],
        env,
        restoreDir,
      );
      expect(result.code).toBe(255);
      expect((Date.now() - started) / 1000).toBeLessThan(RETRY_SECONDS + 4);
    } finally {
      proxy.set({});
    }
  });

  it('a wal-push killed after its upload, before it returned, succeeds when PostgreSQL runs it again', async () => {
    const name = '000000010000000000000003';
    const path = await segmentFile(name);
    // The upload goes through; the read-back that follows it is held, so the kill lands between.
    proxy.set({ method: 'GET', path: /000000010000000000000003-[0-9a-f]+\.zst\.age/, latencyMs: 20_000 });
    const { child, result } = startPgkeep(['wal-push', path], env, dataDir);
    try {
      const deadline = Date.now() + 20_000;
      while ((await storedKeys(name)).length === 0) {
        if (Date.now() > deadline) throw new Error(`${name} was never stored`);
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      expect((await result).signal).toBe('SIGKILL');
    } finally {
      proxy.set({});
    }
    const stored = await storedKeys(name);
    expect(stored).toHaveLength(1);
    const again = await runPgkeep(['wal-push', path], env, dataDir);
    expect(again).toMatchObject({ code: 0, stderr: '' });
    expect(await storedKeys(name)).toEqual(stored);
  });
});
