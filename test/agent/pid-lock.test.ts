/**
 * The spool's pid file as the transient pusher claims it: never from a live process, always from
 * a dead one, and released only by the process it names.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimPidFile, livePidFileHolder, releasePidFile, shellLiveHolder } from '../../agent/pid-lock.ts';

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

/** What archive_command's and restore_command's shell check says of `file`: the pid, or undefined. */
async function shellSays(file: string): Promise<number | undefined> {
  const quoted = `'${file.replaceAll("'", `'\\''`)}'`;
  const script = `if ${shellLiveHolder(quoted, 'P')}; then echo "live $P"; else echo none; fi`;
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  await new Promise((r) => child.once('close', r));
  const m = /^live (\d+)$/.exec(out.trim());
  return m ? Number(m[1]) : undefined;
}

describe('the shell liveness check agrees with livePidFileHolder', () => {
  async function agree(file: string, expected: number | undefined): Promise<void> {
    expect(await livePidFileHolder(file)).toBe(expected);
    expect(await shellSays(file)).toBe(expected);
  }

  it('a live pid, with and without a newline, and with a description line', async () => {
    const file = join(dir, 'live.pid');
    await writeFile(file, String(process.pid));
    await agree(file, process.pid);
    await writeFile(file, `${process.pid}\n`);
    await agree(file, process.pid);
    await writeFile(file, `${process.pid}\nbasebackup since 2026-01-01T00:00:00Z\n`);
    await agree(file, process.pid);
  });

  it('a dead pid', async () => {
    const file = join(dir, 'dead.pid');
    await writeFile(file, `${await deadPid()}\n`);
    await agree(file, undefined);
  });

  it('garbage, an empty file, a pid with a leading zero or sign, and a missing file', async () => {
    const file = join(dir, 'garbage.pid');
    for (const text of [
      'not a pid\n',
      '',
      '\n',
      `0${process.pid}\n`,
      `-${process.pid}\n`,
      '0\n',
      '{"pid":1}',
    ]) {
      await writeFile(file, text);
      await agree(file, undefined);
    }
    await agree(join(dir, 'missing.pid'), undefined);
  });

  it('a zombie', async () => {
    const parent = spawn('sh', ['-c', 'true & echo $!; exec sleep 5'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      const zombie = Number(
        await new Promise<string>((r) => parent.stdout?.once('data', (d: Buffer) => r(d.toString()))),
      );
      const file = join(dir, 'zombie-shell.pid');
      await writeFile(file, `${zombie}\n`);
      await new Promise((r) => setTimeout(r, 200)); // let the child exit
      await agree(file, undefined);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
