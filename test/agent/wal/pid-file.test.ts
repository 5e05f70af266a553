/**
 * The spool's pid file as the transient pusher claims it: never from a live process, always from
 * a dead one, and released only by the process it names.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimPidFile, livePidFileHolder, releasePidFile } from '../../../agent/wal/pid-file.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-pid-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.once('exit', r));
  return child.pid as number;
}

describe('pid file', () => {
  it('is claimed when absent, and not from a live process', async () => {
    const file = join(dir, 'a.pid');
    expect(await claimPidFile(file, process.pid)).toBe(true);
    expect(await readFile(file, 'utf8')).toBe(`${process.pid}\n`);
    expect(await livePidFileHolder(file)).toBe(process.pid);
    expect(await claimPidFile(file, process.pid)).toBe(true);
    expect(await claimPidFile(file, await deadPid())).toBe(false);
    expect(await readFile(file, 'utf8')).toBe(`${process.pid}\n`);
  });

  it('replaces the pid file of a dead process', async () => {
    const file = join(dir, 'b.pid');
    const dead = await deadPid();
    await writeFile(file, String(dead));
    expect(await livePidFileHolder(file)).toBeUndefined();
    expect(await claimPidFile(file, process.pid)).toBe(true);
    expect(await readFile(file, 'utf8')).toBe(`${process.pid}\n`);
  });

  it('is released only by the process it names', async () => {
    const file = join(dir, 'c.pid');
    await writeFile(file, String(process.pid));
    await releasePidFile(file, process.pid + 1);
    expect(await readFile(file, 'utf8')).toBe(String(process.pid));
    await releasePidFile(file, process.pid);
    await expect(readFile(file)).rejects.toThrow();
  });
});
