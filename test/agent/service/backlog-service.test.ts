/**
 * The service during an outage with `wal.onBacklogFull: drop`, real PostgreSQL and the agent
 * running: the backlog shows in its metrics and log, and once the repository is back it records
 * the gap and takes a new base backup at once, from which a restore succeeds.
 */
import { spawn } from 'node:child_process';
import { readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { manifestsPrefix, walGapsPrefix } from '../../../core/keys.ts';
import { freePort, type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';
import { until } from '../../support/until.ts';
import {
  archiveSettings,
  type Harness,
  makeHarness,
  switchAndWaitArchived,
  waitArchived,
} from '../wal/harness.ts';

const MIB = 1024 * 1024;
let h: Harness | undefined;
let pg: PgCluster | undefined;
let stopAgent: (() => Promise<void>) | undefined;

afterAll(async () => {
  await stopAgent?.();
  await pg?.destroy().catch(() => {});
  if (h) await rm(h.dir, { recursive: true, force: true });
});

const list = (dir: string) => readdir(dir).catch(() => [] as string[]);

describe('the service and dropped WAL', () => {
  it('shows the backlog, records the gap when the repository is back, and takes a base backup', {
    timeout: 300_000,
  }, async () => {
    h = await makeHarness('svcdrop', {
      wal: { retrySeconds: 1, maxBacklogBytes: 40 * MIB, onBacklogFull: 'drop' },
    });
    const harness = h;
    pg = await startCluster({ settings: archiveSettings(harness) });
    const cluster = pg;
    await cluster.sql('create table t (v int)');
    expect((await harness.pgkeep(['basebackup'], cluster.env)).code).toBe(0);
    await cluster.sql('insert into t values (0)');
    await switchAndWaitArchived(cluster);

    const metricsPort = await freePort();
    const child = spawn(NODE, [PGKEEP_BUNDLE, 'agent'], {
      ...(harness.user ?? {}),
      cwd: harness.dir,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        PGKEEP_CONFIG: harness.configPath,
        PGKEEP_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
        PGDATA: cluster.dataDir,
        ...cluster.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    stopAgent = async () => {
      child.kill('SIGTERM');
      await exited;
    };
    const metrics = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    await until('the agent to start', () => metrics().catch(() => false), { detail: () => output });

    const manifestsDir = join(harness.repoDir, manifestsPrefix(harness.cluster));
    const before = await list(manifestsDir);
    await rename(harness.repoDir, `${harness.repoDir}.down`);
    const names: string[] = [];
    try {
      for (let i = 1; i <= 4; i++) {
        await cluster.sql(`insert into t values (${i})`);
        names.push(await cluster.sql('select pg_walfile_name(pg_switch_wal())'));
      }
      await waitArchived(cluster, names[1] as string, 40_000).catch((e) => {
        throw new Error(`${e.message}\nagent: ${output}`);
      });
      // Two segments still wait (32 MiB): past the 20 MiB warning, below the limit.
      await until(
        'the backlog warning metric',
        async () => /pgkeep_wal_backlog_level 1\b/.test(await metrics()),
        {
          timeoutMs: 30_000,
          detail: () => output,
        },
      );
      expect(output).toMatch(
        /WARNING: WAL backlog \d+\.\d MiB is past wal\.(backlogWarnBytes|maxBacklogBytes)/,
      );
    } finally {
      await rename(`${harness.repoDir}.down`, harness.repoDir);
    }
    const gapsDir = join(harness.repoDir, walGapsPrefix(harness.cluster));
    // Records of runs of consecutive dropped segments; a put in progress shows only its temp file.
    const covering = async (name: string) =>
      (await list(gapsDir)).some((f) => {
        const m = /^([0-9A-F]{24})-([0-9A-F]{24})\.json$/.exec(f);
        return m !== null && (m[1] as string) <= name && name <= (m[2] as string);
      });
    await until(
      'the gap record',
      async () => (await covering(names[0] as string)) && (await covering(names[1] as string)),
      { timeoutMs: 60_000, detail: () => output },
    );
    expect((await list(gapsDir)).filter((f) => f.endsWith('.json')).length).toBeGreaterThan(0);
    await until(
      'a base backup after the gap',
      async () => (await list(manifestsDir)).length > before.length,
      { timeoutMs: 120_000, detail: () => output },
    );
    expect(output).toContain(`recorded gaps: ${names[0]} to ${names[1]}); taking a base backup now`);
    await stopAgent();
    stopAgent = undefined;
    const restore = await harness.pgkeep(['restore', '--pgdata', join(harness.dir, 'restored')], cluster.env);
    expect(restore.stderr).toBe('');
    expect(restore.code).toBe(0);
  });
});
