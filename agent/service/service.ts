/**
 * `pgkeep agent`, the long-running service: pushes WAL ahead of archive_command (push-ahead.ts),
 * takes scheduled backups one at a time (scheduler.ts) and serves Prometheus metrics on a
 * loopback address (metrics.ts). It writes its pid to the spool so `wal-push` can tell that a
 * service is pushing and wait for its marker instead of pushing the same file twice.
 */

import { mkdir, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { Storage } from '../../storage/storage.ts';
import type { AgentConfig } from '../config.ts';
import type { WalPushResult } from '../wal/push.ts';
import { clusterSpoolRoot, type WalSpool } from '../wal/spool.ts';
import { type BacklogEvent, BacklogWatch } from './backlog-watch.ts';
import { Metrics, serveMetrics } from './metrics.ts';
import { type PushAheadEvent, WalPushAhead } from './push-ahead.ts';
import { BackupScheduler, type ScheduledJob, type SchedulerEvent } from './scheduler.ts';

export type ServiceEvent =
  | PushAheadEvent
  | SchedulerEvent
  | BacklogEvent
  | { type: 'started'; detail: string }
  | { type: 'stopped' };

export interface ServiceOptions {
  readonly config: AgentConfig;
  readonly storage: Storage;
  /** pg_wal of the cluster to push ahead for; undefined = no push-ahead (schedules only). */
  readonly pgWalDir: string | undefined;
  /** The spool of the data directory of `pgWalDir` (or of the working directory without one). */
  readonly spool: WalSpool;
  readonly push: (path: string) => Promise<WalPushResult>;
  readonly jobs: readonly ScheduledJob[];
  /** The base backup taken once WAL dropped at the backlog limit is recorded (scheduled or not). */
  readonly gapBackup?: ScheduledJob;
  readonly onEvent?: (event: ServiceEvent) => void;
  /** Overrides config.metrics.listen (tests use port 0). */
  readonly metricsListen?: string;
}

export interface RunningService {
  readonly metrics: Metrics;
  readonly pushAhead: WalPushAhead | undefined;
  readonly scheduler: BackupScheduler;
  /** `http://host:port/metrics`. */
  readonly metricsUrl: string;
  /** Stops watching and scheduling, lets pushes in flight finish, aborts a running backup. */
  stop(): Promise<void>;
}

/** The file whose pid says a service is running for the cluster. */
export function servicePidFile(spool: WalSpool): string {
  return spool.agentPidFile;
}

export async function startService(options: ServiceOptions): Promise<RunningService> {
  const { config } = options;
  const { spool } = options;
  await mkdir(spool.root, { recursive: true, mode: 0o700 });
  await spool.clearClaims();
  const metrics = new Metrics();
  metrics.set('pgkeep_up', 'the agent service is running', 1);
  const pushAhead =
    options.pgWalDir === undefined
      ? undefined
      : new WalPushAhead({
          pgWalDir: options.pgWalDir,
          spool,
          repository: options.storage.displayUrl,
          parallelism: config.wal.pushParallelism,
          push: options.push,
          metrics,
          ...(options.onEvent ? { onEvent: options.onEvent } : {}),
        });
  const scheduler = new BackupScheduler({
    jobs: options.jobs,
    spoolRoot: clusterSpoolRoot(config.spoolDir, config.cluster),
    metrics,
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });
  const gapBackup = options.gapBackup;
  const backlog =
    options.pgWalDir === undefined
      ? undefined
      : new BacklogWatch({
          pgWalDir: options.pgWalDir,
          settings: config.wal,
          storage: options.storage,
          cluster: config.cluster,
          spoolRoot: spool.root,
          metrics,
          takeBaseBackup: async () => {
            if (!gapBackup) return false;
            let ok = false;
            await scheduler.runNow({
              ...gapBackup,
              run: async (signal) => {
                const bytes = await gapBackup.run(signal);
                ok = true;
                return bytes;
              },
            });
            return ok;
          },
          ...(options.onEvent ? { onEvent: options.onEvent } : {}),
        });
  const server: Server = await serveMetrics(metrics, options.metricsListen ?? config.metrics.listen);
  const address = server.address();
  const metricsUrl =
    typeof address === 'object' && address
      ? `http://${address.address}:${address.port}/metrics`
      : String(address);
  await writeFile(servicePidFile(spool), String(process.pid));
  pushAhead?.start();
  scheduler.start();
  backlog?.start();
  options.onEvent?.({
    type: 'started',
    detail: `pushing WAL from ${options.pgWalDir ?? '(no pg_wal: set wal.pgWalDir or PGDATA)'} with ${config.wal.pushParallelism} at a time; ${
      scheduler
        .nextRuns()
        .map((r) => `${r.kind} backup next at ${r.at?.toISOString()}`)
        .join(', ') || 'no backup schedule'
    }; metrics on ${metricsUrl}`,
  });
  let stopping: Promise<void> | undefined;
  return {
    metrics,
    pushAhead,
    scheduler,
    metricsUrl,
    stop() {
      stopping ??= (async () => {
        await rm(servicePidFile(spool), { force: true });
        await Promise.all([pushAhead?.stop(), scheduler.stop(), backlog?.stop()]);
        await new Promise<void>((resolve) => server.close(() => resolve()));
        options.onEvent?.({ type: 'stopped' });
      })();
      return stopping;
    },
  };
}
