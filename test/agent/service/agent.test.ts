/**
 * `pgkeep agent` against a real archiving cluster: it pushes ready WAL ahead so archive_command
 * returns without starting Node, serves metrics, survives the repository going away without a gap
 * in the archive, leaves no gap and no unverifiable object when SIGKILLed mid-push, and stops
 * cleanly on SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WalSpool } from '../../../agent/wal/spool.ts';
import { nextWalSegmentFileName } from '../../../core/wal-names.ts';
import { finishSegments, freePort, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';
import { until as untilDone } from '../../support/until.ts';
import {
  type Harness,
  loggedNode,
  makeHarness,
  switchAndWaitArchived,
  waitArchived,
} from '../wal/harness.ts';

let h: Harness;
let cluster: PgCluster;
let agent: { child: ChildProcess; output: () => string; exited: Promise<number | null> } | undefined;
let metricsPort: number;
let nodeLog: string;
let loggingNode: string;

function startAgent(): NonNullable<typeof agent> {
  const child = spawn(NODE, [PGKEEP_BUNDLE, 'agent'], {
    ...(h.user ?? {}),
    cwd: h.dir,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      PGKEEP_CONFIG: h.configPath,
      PGKEEP_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
      PGDATA: cluster.dataDir,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => text, exited };
}

/** Polls like {@link untilDone}, showing what the agent said when it times out. */
function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  return untilDone(what, fn, { timeoutMs, pollMs: 100, detail: () => agent?.output() ?? '' });
}

async function storedSegments(): Promise<string[]> {
  const files: string[] = await readdir(join(h.repoDir, 'v1', h.cluster, 'wal', '00000001')).catch(() => []);
  return files.map((f) => f.slice(0, 24)).sort();
}

async function metrics(): Promise<string> {
  return await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
}

beforeAll(async () => {
  h = await makeHarness('svc', { wal: { retrySeconds: 2, pushParallelism: 4 } });
  // archive_command's Node goes through a wrapper that logs every start: the proof that the fast
  // path did not start Node.
  ({ wrapper: loggingNode, log: nodeLog } = await loggedNode(h, 'node-starts'));
  // archive_command stays empty at first (WAL piles up as .ready), then is set with ALTER SYSTEM.
  cluster = await startCluster({ settings: { archive_mode: 'on', wal_level: 'replica' } });
  await cluster.sql('create table t (g int)');
  metricsPort = await freePort();
});

afterAll(async () => {
  if (agent && agent.child.exitCode === null) {
    agent.child.kill('SIGKILL');
    await agent.exited;
  }
  await cluster?.destroy();
  await rm(h.dir, { recursive: true, force: true });
});

describe('pgkeep agent', () => {
  it('pushes ready WAL ahead, so archive_command returns without starting Node', async () => {
    agent = startAgent();
    await until('the agent to start', async () => agent?.output().includes('started'));
    const names = await finishSegments(cluster, 6);
    const markers = new WalSpool(h.spoolDir, h.cluster, cluster.dataDir).pushedDir;
    await until('the agent to push every ready segment', async () => {
      const pushed: string[] = await readdir(markers).catch(() => []);
      return names.every((n) => pushed.includes(n));
    });
    const archiveCommand = h.archiveCommandWith(loggingNode);
    await cluster.sql(`alter system set archive_command = '${archiveCommand.replaceAll("'", "''")}'`);
    await cluster.sql('select pg_reload_conf()');
    await waitArchived(cluster, names[names.length - 1] as string);
    const starts = await readFile(nodeLog, 'utf8');
    for (const name of names) expect(starts).not.toContain(name);
    expect(await storedSegments()).toEqual(expect.arrayContaining(names));

    const text = await metrics();
    expect(text).toMatch(/pgkeep_last_success_timestamp_seconds\{kind="wal"\} \d+/);
    expect(text).toMatch(/pgkeep_wal_pushed_total\{outcome="stored"\} ([6-9]|\d\d)/);
    expect(text).toMatch(/pgkeep_wal_queue_depth \d/);
    expect(text).toMatch(/pgkeep_archive_lag_segments \d/);
    // PostgreSQL marked them done: the markers go away again.
    await until('markers to be cleaned up', async () => (await readdir(markers)).length === 0);
  });

  it('keeps the archive without a gap while the repository is away and after it returns', async () => {
    const first = await switchAndWaitArchived(cluster);
    await rename(h.repoDir, `${h.repoDir}.away`);
    let names: string[];
    try {
      names = await finishSegments(cluster, 2);
      await until(
        'archive_command to fail',
        async () => Number(await cluster.sql('select failed_count from pg_stat_archiver')) > 0,
        60_000,
      );
      expect(await metrics()).toMatch(/pgkeep_failures_total\{kind="wal"\} [1-9]/);
    } finally {
      await rename(`${h.repoDir}.away`, h.repoDir);
    }
    await waitArchived(cluster, names[1] as string, 90_000);
    const stored = await storedSegments();
    for (let n = first; n !== names[1]; n = nextWalSegmentFileName(n)) expect(stored).toContain(n);
  });

  it('leaves no gap and no unverifiable object when SIGKILLed mid-push', async () => {
    const before = await storedSegments();
    const names = await finishSegments(cluster, 4);
    agent?.child.kill('SIGKILL');
    await agent?.exited;
    agent = undefined;
    await waitArchived(cluster, names[3] as string, 90_000);
    const stored = await storedSegments();
    for (let n = before[before.length - 1] as string; n !== names[3]; n = nextWalSegmentFileName(n)) {
      expect(stored).toContain(n);
    }
    // Every stored segment decrypts and matches the hash in its key (wal-fetch checks both).
    for (const name of names) {
      const result = await h.pgkeep(['wal-fetch', name, join(h.dir, 'check')]);
      expect(result).toMatchObject({ code: 0, stderr: '' });
    }
  });

  it('stops cleanly on SIGTERM', async () => {
    agent = startAgent();
    await until('the agent to start', async () => agent?.output().includes('started'));
    await finishSegments(cluster, 2);
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
    expect(agent.output()).toContain('stopped');
    await expect(
      readFile(new WalSpool(h.spoolDir, h.cluster, cluster.dataDir).agentPidFile),
    ).rejects.toThrow();
  });
});
