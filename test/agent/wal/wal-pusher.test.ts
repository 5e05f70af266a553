/**
 * The transient pusher (`pgkeep wal-pusher`, wal.asyncSeconds) against a real archiving cluster:
 * one synchronous wal-push without the service starts it; it pushes the other ready segments
 * ahead so archive_command returns for them without starting Node; it exits by itself once idle
 * and removes its pid file; asyncSeconds 0 starts nothing; and it steps aside for `pgkeep agent`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readPidFile } from '../../../agent/pid-lock.ts';
import { WalSpool } from '../../../agent/wal/spool.ts';
import { finishSegments, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';
import { until } from '../../support/until.ts';
import { type Harness, loggedNode, makeHarness, waitArchived } from './harness.ts';

let h: Harness;
let cluster: PgCluster;
let nodeLog: string;
let loggingNode: string;
let pidFile: string;
let markers: string;

/** Whether the process runs (a zombie nobody has reaped yet does not). */
async function running(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
}

/** Pids of the pushers started for this test's cluster (their command line names its pg_wal). */
async function pushers(): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('wal-pusher') && cmdline.includes(cluster.dataDir) && (await running(Number(entry))))
      pids.push(Number(entry));
  }
  return pids;
}

async function killPushers(): Promise<void> {
  for (const pid of await pushers()) process.kill(pid, 'SIGKILL');
}

/** `pgkeep wal-push pg_wal/NAME` as archive_command runs it: in the data directory, no service. */
async function walPush(name: string, env: Record<string, string> = {}) {
  return await h.pgkeep(
    ['wal-push', `pg_wal/${name}`],
    { PGKEEP_NO_AGENT_WAIT: '1', ...env },
    cluster.dataDir,
  );
}

async function hasMarker(name: string): Promise<boolean> {
  return (await readdir(markers).catch(() => [] as string[])).includes(name);
}

beforeAll(async () => {
  h = await makeHarness('async', { wal: { asyncSeconds: 2, retrySeconds: 2 } });
  // archive_command's Node goes through a wrapper that logs every start: the proof that the fast
  // path did not start Node.
  ({ wrapper: loggingNode, log: nodeLog } = await loggedNode(h, 'node-starts'));
  // archive_command stays empty (WAL piles up as .ready) until a test sets it.
  cluster = await startCluster({ settings: { archive_mode: 'on', wal_level: 'replica' } });
  const spool = new WalSpool(h.spoolDir, h.cluster, cluster.dataDir);
  pidFile = spool.agentPidFile;
  markers = spool.pushedDir;
  await cluster.sql('create table t (g int)');
});

afterEach(killPushers);

afterAll(async () => {
  if (cluster) await killPushers();
  await cluster?.destroy();
  await rm(h.dir, { recursive: true, force: true });
});

describe('pgkeep wal-pusher (wal.asyncSeconds)', () => {
  it('starts after a synchronous wal-push, pushes the following segments ahead and exits once idle', async () => {
    const names = await finishSegments(cluster, 6);
    const first = names[0] as string;
    expect(await walPush(first)).toMatchObject({ code: 0, stderr: '' });
    const pid = await readPidFile(pidFile);
    expect(pid).toBeDefined();
    expect(await pushers()).toEqual([pid]);
    await until('the pusher to push every other ready segment', async () => {
      for (const name of names.slice(1)) if (!(await hasMarker(name))) return false;
      return true;
    });

    const archiveCommand = h.archiveCommandWith(loggingNode);
    await cluster.sql(`alter system set archive_command = '${archiveCommand.replaceAll("'", "''")}'`);
    await cluster.sql('select pg_reload_conf()');
    try {
      await waitArchived(cluster, names[names.length - 1] as string);
    } finally {
      // Later tests run wal-push themselves.
      await cluster.sql(`alter system set archive_command = ''`);
      await cluster.sql('select pg_reload_conf()');
    }
    const starts = await readFile(nodeLog, 'utf8');
    for (const name of names.slice(1)) expect(starts).not.toContain(name);
    const stored = (await readdir(join(h.repoDir, 'v1', h.cluster, 'wal', '00000001'))).map((f) =>
      f.slice(0, 24),
    );
    expect(stored).toEqual(expect.arrayContaining(names));

    // asyncSeconds is 2: idle from here on, it exits and takes its pid file with it.
    await until('the pusher to exit by itself', async () => !(await running(pid as number)), {
      timeoutMs: 10_000,
    });
    await expect(readFile(pidFile)).rejects.toThrow();
  });

  it('starts no process with asyncSeconds 0', async () => {
    const names = await finishSegments(cluster, 2);
    expect(await walPush(names[0] as string, { PGKEEP_WAL_ASYNC_SECONDS: '0' })).toMatchObject({ code: 0 });
    await new Promise((r) => setTimeout(r, 1500));
    expect(await pushers()).toEqual([]);
    await expect(readFile(pidFile)).rejects.toThrow();
    expect(await hasMarker(names[1] as string)).toBe(false);
  });

  it('stops on SIGTERM and removes its pid file', async () => {
    const [name, next] = await finishSegments(cluster, 2);
    expect(await walPush(name as string, { PGKEEP_WAL_ASYNC_SECONDS: '60' })).toMatchObject({ code: 0 });
    const pusher = (await readPidFile(pidFile)) as number;
    expect(await pushers()).toEqual([pusher]);
    // Running, not just started: it pushed the next segment.
    await until('the pusher to push', async () => hasMarker(next as string));
    process.kill(pusher, 'SIGTERM');
    await until('the pusher to stop', async () => !(await running(pusher)), { timeoutMs: 5_000 });
    await expect(readFile(pidFile)).rejects.toThrow();
  });

  it('steps aside when pgkeep agent starts', async () => {
    const [name] = await finishSegments(cluster, 1);
    expect(await walPush(name as string, { PGKEEP_WAL_ASYNC_SECONDS: '60' })).toMatchObject({ code: 0 });
    const pusher = (await readPidFile(pidFile)) as number;
    expect(await running(pusher)).toBe(true);

    let agent: ChildProcess | undefined;
    try {
      agent = spawn(NODE, [PGKEEP_BUNDLE, 'agent'], {
        ...(h.user ?? {}),
        cwd: h.dir,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          PGKEEP_CONFIG: h.configPath,
          PGKEEP_METRICS_LISTEN: '127.0.0.1:0',
          PGDATA: cluster.dataDir,
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let output = '';
      agent.stderr?.on('data', (d: Buffer) => {
        output += d.toString();
      });
      await until('the agent to start', async () => output.includes('started'));
      const tookOver = Date.now();
      await until('the pusher to step aside', async () => !(await running(pusher)), { timeoutMs: 5_000 });
      expect(Date.now() - tookOver).toBeLessThan(3_000);
      // It left the agent's pid file alone, and the agent pushes what comes next.
      expect(await readPidFile(pidFile)).toBe(agent.pid);
      const [next] = await finishSegments(cluster, 1);
      await until('the agent to push', async () => hasMarker(next as string));
    } finally {
      if (agent && agent.exitCode === null) {
        const exited = new Promise((r) => agent?.once('exit', r));
        agent.kill('SIGTERM');
        await exited;
      }
    }
  });
});
