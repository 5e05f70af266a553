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

  it('replaces the pid file of a zombie (a holder killed and never reaped)', async () => {
    // sh starts a child that exits at once, then becomes `sleep`, which never reaps it: the child
    // stays a zombie for as long as the sleep runs.
    const parent = spawn('sh', ['-c', 'true & echo $!; exec sleep 5'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      const zombie = Number(
        await new Promise<string>((r) => parent.stdout?.once('data', (d: Buffer) => r(d.toString()))),
      );
      const file = join(dir, 'zombie.pid');
      await writeFile(file, String(zombie));
      await new Promise((r) => setTimeout(r, 200)); // let the child exit
      expect(await livePidFileHolder(file)).toBeUndefined();
      expect(await claimPidFile(file, process.pid)).toBe(true);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
