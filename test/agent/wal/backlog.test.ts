/** The WAL backlog as wal-push measures it: scanned only when a threshold is configured. */
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureBacklog } from '../../../agent/wal/backlog.ts';

const SEGMENT_BYTES = 16 * 1024 * 1024;
let work: string;
let pgWal: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-backlog-'));
  pgWal = join(work, 'pg_wal');
  await mkdir(join(pgWal, 'archive_status'), { recursive: true });
  // Two segments waiting to be archived, one already done.
  for (const [name, status] of [
    ['000000010000000000000001', 'ready'],
    ['000000010000000000000002', 'ready'],
    ['000000010000000000000003', 'done'],
  ] as const) {
    await writeFile(join(pgWal, name), '');
    await truncate(join(pgWal, name), SEGMENT_BYTES);
    await writeFile(join(pgWal, 'archive_status', `${name}.${status}`), '');
  }
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('measureBacklog', () => {
  it('counts the ready segments against wal.maxBacklogBytes', async () => {
    const settings = { maxBacklogBytes: 2 * SEGMENT_BYTES, onBacklogFull: 'fail' } as const;
    expect(await measureBacklog(settings, pgWal)).toEqual({ bytes: 2 * SEGMENT_BYTES, level: 'full' });
  });

  it('warns past wal.backlogWarnBytes alone', async () => {
    const settings = { maxBacklogBytes: 0, backlogWarnBytes: SEGMENT_BYTES, onBacklogFull: 'fail' } as const;
    expect(await measureBacklog(settings, pgWal)).toEqual({ bytes: 2 * SEGMENT_BYTES, level: 'warn' });
  });

  it('does not scan pg_wal without a threshold (the default)', async () => {
    const settings = { maxBacklogBytes: 0, onBacklogFull: 'fail' } as const;
    expect(await measureBacklog(settings, pgWal)).toEqual({ bytes: 0, level: 'ok' });
  });
});
