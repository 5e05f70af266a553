import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupRunningError, withBackupLock } from '../../../agent/service/backup-lock.ts';
import { Metrics, serveMetrics } from '../../../agent/service/metrics.ts';
import { BackupScheduler, type SchedulerEvent } from '../../../agent/service/scheduler.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-sched-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('backup scheduling', () => {
  it('runs cron jobs and never two backups of a cluster at once', async () => {
    const metrics = new Metrics();
    const events: SchedulerEvent[] = [];
    let running = 0;
    let maxRunning = 0;
    const job = (kind: 'logical' | 'base') => ({
      kind,
      cron: '* * * * * *', // every second (croner's optional seconds field)
      run: async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((r) => setTimeout(r, 1500));
        running--;
        return 100;
      },
    });
    const scheduler = new BackupScheduler({
      jobs: [job('logical'), job('base')],
      spoolRoot: join(dir, 'c1'),
      metrics,
      onEvent: (e) => events.push(e),
    });
    scheduler.start();
    await new Promise((r) => setTimeout(r, 3500));
    await scheduler.stop();
    expect(maxRunning).toBe(1);
    expect(events.filter((e) => e.type === 'backup-finished').length).toBeGreaterThanOrEqual(1);
    expect(events.some((e) => e.type === 'backup-skipped')).toBe(true);
    const text = await metrics.render();
    expect(text).toMatch(/pgkeep_last_success_timestamp_seconds\{kind="(logical|base)"\} \d+/);
    expect(text).toMatch(/pgkeep_backup_skipped_total\{kind="(logical|base)"\} [1-9]/);
  });

  it('counts a failed backup and aborts a running one when stopped', async () => {
    const metrics = new Metrics();
    let aborted = false;
    const scheduler = new BackupScheduler({
      jobs: [],
      spoolRoot: join(dir, 'c2'),
      metrics,
    });
    await scheduler.runNow({
      kind: 'base',
      cron: '0 0 * * *',
      run: async () => Promise.reject(new Error('boom')),
    });
    expect(metrics.value('pgkeep_failures_total', { kind: 'base' })).toBe(1);
    const long = scheduler.runNow({
      kind: 'base',
      cron: '0 0 * * *',
      run: (signal) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            reject(new Error('aborted'));
          }),
        ),
    });
    await new Promise((r) => setTimeout(r, 50));
    await scheduler.stop();
    await long;
    expect(aborted).toBe(true);
  });

  it('refuses a second backup while the lock is held, and takes over a dead holder', async () => {
    const root = join(dir, 'c3');
    await withBackupLock(root, 'first', async () => {
      await expect(withBackupLock(root, 'second', async () => 1)).rejects.toThrow(BackupRunningError);
    });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(
      join(root, 'backup.lock'),
      JSON.stringify({ pid: 2 ** 22 + 12345, what: 'x', since: '' }),
    );
    expect(await withBackupLock(root, 'after crash', async () => 7)).toBe(7);
  });

  it('serves metrics on a loopback port in the Prometheus text format', async () => {
    const metrics = new Metrics();
    metrics.inc('pgkeep_failures_total', 'failed operations', { kind: 'wal' });
    metrics.onCollect(() => metrics.set('pgkeep_wal_queue_depth', 'queue', 3));
    const server = await serveMetrics(metrics, '127.0.0.1:0');
    try {
      const address = server.address() as { port: number; address: string };
      expect(address.address).toBe('127.0.0.1');
      const body = await (await fetch(`http://127.0.0.1:${address.port}/metrics`)).text();
      expect(body).toContain('# TYPE pgkeep_failures_total counter');
      expect(body).toContain('pgkeep_failures_total{kind="wal"} 1');
      expect(body).toContain('pgkeep_wal_queue_depth 3');
    } finally {
      server.close();
    }
  });
});
