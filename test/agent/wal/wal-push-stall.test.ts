/**
 * wal-push run by hand, as a new user would (issue 11): 16 MiB segments in a directory outside
 * pg_wal, PGDATA set, the default configuration (transient pusher on). The pusher the first call
 * starts only pushes what pg_wal/archive_status lists, so the later calls' files are never its
 * work: wal-push must not wait for it (it used to wait 10 s a call), only for a file the pusher
 * has claimed.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WalSpool } from '../../../agent/wal/spool.ts';
import { stopWalPusher } from '../../support/pgkeep-cli.ts';
import { walSegment } from '../../support/wal-segment.ts';
import { type Harness, makeHarness } from './harness.ts';

const SYSID = 7_390_000_000_000_000_111n;

let h: Harness;
let pgData: string;
let segments: string;

beforeAll(async () => {
  // The default wal.asyncSeconds (60): the transient pusher runs.
  h = await makeHarness('stall', { wal: { asyncSeconds: 60 } });
  pgData = join(h.dir, 'pgdata');
  segments = join(h.dir, 'segments');
  await mkdir(join(pgData, 'pg_wal', 'archive_status'), { recursive: true });
  await mkdir(segments);
  if (h.user) {
    const { chown } = await import('node:fs/promises');
    for (const dir of [pgData, join(pgData, 'pg_wal'), join(pgData, 'pg_wal', 'archive_status'), segments])
      await chown(dir, h.user.uid, h.user.gid);
  }
});

afterAll(async () => {
  await stopWalPusher(h.spoolDir, h.cluster, pgData);
  await rm(h.dir, { recursive: true, force: true });
});

/** Writes segment number `n` of timeline `tli` to the segments directory and pushes it by hand. */
async function pushByHand(tli: number, n: number, env: Record<string, string>): Promise<number> {
  const name = `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
  const path = join(segments, name);
  await writeFile(path, walSegment(name, SYSID));
  if (h.user) {
    const { chown } = await import('node:fs/promises');
    await chown(path, h.user.uid, h.user.gid);
  }
  const started = performance.now();
  const result = await h.pgkeep(['wal-push', path], { PGDATA: pgData, ...env }, segments);
  const ms = performance.now() - started;
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return ms;
}

describe('wal-push by hand with the transient pusher on', () => {
  it('is no slower per call than with wal.asyncSeconds 0', async () => {
    const sync: number[] = [];
    for (let n = 1; n <= 4; n++) sync.push(await pushByHand(1, n, { PGKEEP_WAL_ASYNC_SECONDS: '0' }));
    const syncMs = [...sync].sort((a, b) => a - b)[1] as number;

    const async: number[] = [];
    for (let n = 1; n <= 5; n++) async.push(await pushByHand(2, n, {}));
    // The first call started the pusher, which holds this data directory's pid file.
    const pusher = new WalSpool(h.spoolDir, h.cluster, pgData).agentPidFile;
    const { livePidFileHolder } = await import('../../../agent/pid-lock.ts');
    expect(await livePidFileHolder(pusher)).toBeDefined();
    for (const ms of async) {
      expect(ms).toBeLessThan(2 * syncMs + 1_000);
      expect(ms).toBeLessThan(9_000);
    }
  });
});
