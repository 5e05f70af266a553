/**
 * The restore marker without a server: which WAL a marked data directory may archive, and what
 * `pgkeep promote-archive` does and refuses.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type RestoredMarker,
  restoredMarkerPath,
  writeRestoredMarker,
} from '../../../agent/physical/restored-marker.ts';
import { walSegment } from '../../support/wal-segment.ts';
import { type Harness, makeHarness } from '../wal/harness.ts';

const execFileAsync = promisify(execFile);
const SYSID = 7_390_000_000_000_000_222n;

let h: Harness;
let count = 0;

beforeAll(async () => {
  h = await makeHarness('marked');
});

afterAll(async () => {
  await rm(h.dir, { recursive: true, force: true });
});

/** A data directory with a pg_wal holding `segment`, and the marker when given. */
async function dataDir(marker: RestoredMarker | string | undefined, segment: string): Promise<string> {
  const dir = join(h.dir, `pgdata-${++count}`);
  await mkdir(join(dir, 'pg_wal'), { recursive: true });
  await writeFile(join(dir, 'pg_wal', segment), walSegment(segment, SYSID));
  if (typeof marker === 'string') await writeFile(restoredMarkerPath(dir), marker);
  else if (marker) await writeRestoredMarker(dir, marker);
  if (h.user) await execFileAsync('chown', ['-R', `${h.user.uid}:${h.user.gid}`, dir]);
  return dir;
}

const marker = (archive: RestoredMarker['archive']): RestoredMarker => ({
  cluster: 'marked',
  backupId: '20260101T000000Z-abcd',
  restoredAt: '2026-01-01T00:00:00Z',
  archive,
});

describe('a restored data directory', () => {
  it('refuses wal-push into its cluster unless its restore allowed it', async () => {
    const refused = [
      marker({ mode: 'off' }),
      marker({ mode: 'new-cluster', cluster: 'staging' }),
      'not json',
    ];
    for (const m of refused) {
      const segment = `0000000100000000000000${10 + count}`;
      const dir = await dataDir(m, segment);
      const pushed = await h.pgkeep(['wal-push', `pg_wal/${segment}`], {}, dir);
      expect(pushed.code).toBe(6);
      expect(pushed.stderr).toContain(`pgkeep promote-archive --pgdata ${dir}`);
    }
    expect(await readdir(join(h.repoDir, 'v1', 'marked', 'wal')).catch(() => [])).toEqual([]);
    const kept = await dataDir(marker({ mode: 'keep' }), '000000010000000000000020');
    expect(await h.pgkeep(['wal-push', 'pg_wal/000000010000000000000020'], {}, kept)).toMatchObject({
      code: 0,
      stderr: '',
    });
  });

  it('promote-archive refuses a server still in recovery, and adopts a promoted one', async () => {
    const dir = await dataDir(marker({ mode: 'off' }), '000000020000000000000030');
    await writeFile(join(dir, 'recovery.signal'), '');
    const early = await h.pgkeep(['promote-archive', '--pgdata', dir]);
    expect(early.code).toBe(2);
    expect(early.stderr).toContain('pg_ctl promote');
    await stat(restoredMarkerPath(dir));

    await rm(join(dir, 'recovery.signal'));
    await writeFile(join(dir, 'pg_wal', '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    if (h.user) await execFileAsync('chown', ['-R', `${h.user.uid}:${h.user.gid}`, dir]);
    const adopted = await h.pgkeep(['promote-archive', '--pgdata', dir]);
    expect(adopted.stderr).toBe('');
    expect(adopted.code).toBe(0);
    expect(adopted.stdout).toContain('timeline 2 (00000002.history stored)');
    await expect(stat(restoredMarkerPath(dir))).rejects.toThrow(/ENOENT/);
    expect(await readdir(join(h.repoDir, 'v1', 'marked', 'wal', '00000002'))).toEqual([
      expect.stringMatching(/^00000002\.history-/),
    ]);
    expect((await h.pgkeep(['wal-push', 'pg_wal/000000020000000000000030'], {}, dir)).code).toBe(0);

    const unmarked = await h.pgkeep(['promote-archive', '--pgdata', dir]);
    expect(unmarked.code).toBe(0);
    expect(unmarked.stdout).toContain('carries no restore marker');
  });
});
