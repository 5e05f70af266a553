/**
 * The exit-code table: the README's tables of commands and exit codes agree with the code, and each
 * typed storage failure reaches the built CLI as the README's code with a message naming the
 * repository (real s3rver, a real missing directory, a real closed port).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS } from '../../agent/commands/index.ts';
import { EXIT_CODE_BY_ERROR, ExitCode, exitCodeFor } from '../../agent/exit-codes.ts';
import {
  AccessDeniedError,
  RepositoryNotFoundError,
  StorageUnavailableError,
} from '../../storage/storage.ts';
import { PROJECT_ROOT, runPgkeep } from '../support/pgkeep-cli.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../support/s3-server.ts';

const readme = await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8');

/** The rows of the first Markdown table after `marker`, as cells. */
function tableAfter(marker: string): string[][] {
  const start = readme.indexOf(marker);
  expect(start, `README has no "${marker}"`).toBeGreaterThanOrEqual(0);
  const lines = readme.slice(start).split('\n');
  const first = lines.findIndex((l) => l.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .replace(/\\\|/g, '¦')
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
  }
  return rows.slice(2); // header and separator
}

describe('README', () => {
  it('lists every command of the CLI, and no other', () => {
    const named = tableAfter('### Commands').map((row) => /^`pgkeep ([a-z-]+)/.exec(row[0] ?? '')?.[1]);
    expect(named).not.toContain(undefined);
    expect([...new Set(named)].sort()).toEqual(Object.keys(COMMANDS).sort());
  });

  it('lists every exit code of ExitCode, and no other', () => {
    const codes = tableAfter('Exit codes (').map((row) => Number(/^`(\d+)`$/.exec(row[0] ?? '')?.[1]));
    expect(codes).toEqual(Object.values(ExitCode));
  });

  it('maps the storage errors to "repository unreachable", as its table says', () => {
    const meaning = tableAfter('Exit codes (').find((row) => row[0] === `\`${ExitCode.unavailable}\``)?.[1];
    expect(meaning).toMatch(/unreachable.*bucket or directory missing.*credentials missing or refused/);
    for (const error of [
      new StorageUnavailableError('down'),
      new RepositoryNotFoundError('no bucket'),
      new AccessDeniedError('no credentials'),
    ]) {
      expect(exitCodeFor(error)).toBe(ExitCode.unavailable);
    }
    expect(exitCodeFor(new Error('anything else'))).toBe(ExitCode.failed);
    // Every code the table maps to is one the README lists.
    const listed: number[] = Object.values(ExitCode);
    for (const code of Object.values(EXIT_CODE_BY_ERROR)) expect(listed).toContain(code);
  });
});

describe('each typed storage failure exits with the README code and names the repository', () => {
  let s3: S3Server;
  let work: string;
  const env = (repository: string, extra: Record<string, string> = {}) => ({
    PGKEEP_CONFIG: join(work, 'empty.yaml'),
    PGKEEP_CLUSTER: 'shopdb',
    PGKEEP_REPOSITORY: repository,
    // No instance metadata or profile to fall back on: only what the test gives.
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-credentials'),
    AWS_CONFIG_FILE: join(work, 'no-config'),
    ...extra,
  });
  const withKeys = {
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };

  beforeAll(async () => {
    s3 = await startS3Server({ buckets: ['ingest'] });
    work = join(tmpdir(), `pgkeep-exit-codes-${process.pid}`);
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true });
    await writeFile(join(work, 'empty.yaml'), '');
  });
  afterAll(async () => {
    await s3?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('works when nothing is wrong (the baseline the failures differ from)', async () => {
    const result = await runPgkeep(['list'], env(s3.url('ingest', 'x'), withKeys));
    expect(result.stderr).toBe('');
    expect(result.code).toBe(ExitCode.ok);
  });

  it('no credentials', async () => {
    const result = await runPgkeep(['list'], env(s3.url('ingest', 'x')));
    expect(result.code).toBe(ExitCode.unavailable);
    expect(result.stderr).toMatch(/no S3 credentials found for s3:\/\/ingest\/x\//);
    expect(result.stderr).toMatch(/AWS_ACCESS_KEY_ID/);
  });

  it('no bucket', async () => {
    const result = await runPgkeep(['list'], env(s3.url('no-such-bucket', 'x'), withKeys));
    expect(result.code).toBe(ExitCode.unavailable);
    expect(result.stderr).toContain(`bucket "no-such-bucket" does not exist at ${s3.endpoint}`);
  });

  it('no directory', async () => {
    const missing = join(work, 'unmounted-nas');
    const result = await runPgkeep(['list'], env(`file://${missing}`));
    expect(result.code).toBe(ExitCode.unavailable);
    expect(result.stderr).toContain(`repository directory ${missing} does not exist`);
  });

  it('refused connection', async () => {
    const port = await closedPort();
    const endpoint = `http://127.0.0.1:${port}`;
    const result = await runPgkeep(
      ['list'],
      env(
        `s3://ingest/x?endpoint=${encodeURIComponent(endpoint)}&path-style=true&region=us-east-1`,
        withKeys,
      ),
    );
    expect(result.code).toBe(ExitCode.unavailable);
    expect(result.stderr).toContain(`${endpoint} is unreachable or failing (ECONNREFUSED)`);
    expect(result.stderr).toContain('s3://ingest/x/');
  });
});

/** A loopback port that was free a moment ago and has nothing listening now. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
