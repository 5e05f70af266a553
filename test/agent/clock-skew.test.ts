/**
 * The agent under libfaketime (Debian's `faketime`), a day ahead and a day behind an S3 server
 * (s3rver) whose clock is right: a backup refuses to start, naming the clock, and stores nothing;
 * with the clock right the same backup succeeds. Backup ids, which come from the host clock, so
 * never go out of order.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterPrefix } from '../../core/keys.ts';
import { prerequisiteProblem } from '../../scripts/prerequisites.ts';
import { openStorage } from '../../storage/open-storage.ts';
import { PG_BIN, type PgCluster, startCluster } from '../support/pg-cluster.ts';
import { type CliResult, NODE, PGKEEP_BUNDLE } from '../support/pgkeep-cli.ts';
import {
  S3RVER_CREDENTIALS,
  type S3Server,
  startS3Server,
  useS3rverCredentials,
} from '../support/s3-server.ts';

let pg: PgCluster;
let s3: S3Server;
let work: string;
let env: Record<string, string>;

beforeAll(async () => {
  const missing = prerequisiteProblem('faketime');
  if (missing) throw new Error(missing);
  useS3rverCredentials();
  [pg, s3] = await Promise.all([startCluster(), startS3Server({ buckets: ['ingest'] })]);
  work = await mkdtemp(join(tmpdir(), 'pgkeep-skew-'));
  const identity = await generateX25519Identity();
  await writeFile(join(work, 'empty.yaml'), '{}\n', { mode: 0o600 });
  env = {
    ...pg.env,
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    PGKEEP_CONFIG: join(work, 'empty.yaml'),
    PGKEEP_CLUSTER: 'skew',
    PGKEEP_REPOSITORY: s3.url('ingest'),
    PGKEEP_RECIPIENTS: await identityToRecipient(identity),
    PGKEEP_PG_BIN: PG_BIN,
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };
});

afterAll(async () => {
  await Promise.all([pg?.destroy(), s3?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

/** `pgkeep backup --db postgres` with the host clock moved by `offset` (faketime's -f syntax). */
function backupAt(offset: string | undefined): Promise<CliResult> {
  const args = [NODE, PGKEEP_BUNDLE, 'backup', '--db', 'postgres'];
  const [program, ...rest] = offset ? ['faketime', '-f', offset, ...args] : args;
  // Timers run on the real monotonic clock; only the wall clock is moved.
  const child = spawn(program as string, rest, {
    env: { ...env, FAKETIME_DONT_FAKE_MONOTONIC: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

async function storedKeys(): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of openStorage(s3.url('ingest')).list(clusterPrefix('skew'))) keys.push(object.key);
  return keys;
}

describe('a host clock a day off', () => {
  it.each([
    ['+1d', 'ahead of'],
    ['-1d', 'behind'],
  ])('at %s, a backup refuses to start, naming the clock, and stores nothing', async (offset, direction) => {
    const result = await backupAt(offset);
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(
      new RegExp(`the host clock \\(.*\\) is 14\\d\\d minutes ${direction} the repository's`),
    );
    expect(result.stderr).toContain('NTP');
    expect(await storedKeys()).toEqual([]);
  });

  it('with the clock right, the same backup is stored', async () => {
    const result = await backupAt(undefined);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect((await storedKeys()).some((k) => k.includes('/manifests/'))).toBe(true);
  });
});
