/**
 * Cron schedules for the service's backups (`15 * * * *`), one backup at a time per cluster: a
 * run that finds another backup running is skipped and counted, never queued behind it.
 */
import { Cron } from 'croner';
import { BackupRunningError, withBackupLock } from './backup-lock.ts';
import type { Metrics } from './metrics.ts';

export type BackupKind = 'logical' | 'base';

export type SchedulerEvent =
  | { type: 'backup-started'; kind: BackupKind }
  | { type: 'backup-finished'; kind: BackupKind; ms: number; bytes: number }
  | { type: 'backup-skipped'; kind: BackupKind; reason: string }
  | { type: 'backup-failed'; kind: BackupKind; error: Error };

export interface ScheduledJob {
  readonly kind: BackupKind;
  readonly cron: string;
  /** Takes the backup; resolves to the stored bytes. `signal` aborts it when the service stops. */
  readonly run: (signal: AbortSignal) => Promise<number>;
}

export interface SchedulerOptions {
  readonly jobs: readonly ScheduledJob[];
  /** The cluster's spool directory, which holds the backup lock. */
  readonly spoolRoot: string;
  readonly metrics: Metrics;
  readonly onEvent?: (event: SchedulerEvent) => void;
  /** IANA time zone of the cron expressions. @default the host's */
  readonly timezone?: string;
}

export class BackupScheduler {
  readonly #options: SchedulerOptions;
  readonly #crons: Cron[] = [];
  readonly #running = new Set<Promise<void>>();
  readonly #abort = new AbortController();

  constructor(options: SchedulerOptions) {
    this.#options = options;
  }

  start(): void {
    for (const job of this.#options.jobs) {
      const cron = new Cron(
        job.cron,
        { protect: true, ...(this.#options.timezone ? { timezone: this.#options.timezone } : {}) },
        () => this.runNow(job),
      );
      this.#crons.push(cron);
    }
  }

  /** When each job runs next. */
  nextRuns(): { kind: BackupKind; at: Date | null }[] {
    return this.#options.jobs.map((job, i) => ({ kind: job.kind, at: this.#crons[i]?.nextRun() ?? null }));
  }

  /** Runs one job now under the cluster's backup lock; never rejects (failures become events and metrics). */
  runNow(job: ScheduledJob): Promise<void> {
    const { metrics, onEvent } = this.#options;
    const run = (async () => {
      const started = Date.now();
      try {
        const bytes = await withBackupLock(
          this.#options.spoolRoot,
          `scheduled ${job.kind} backup`,
          async () => {
            onEvent?.({ type: 'backup-started', kind: job.kind });
            metrics.set('pgkeep_backup_running', 'whether a backup of each kind is running', 1, {
              kind: job.kind,
            });
            try {
              return await job.run(this.#abort.signal);
            } finally {
              metrics.set('pgkeep_backup_running', 'whether a backup of each kind is running', 0, {
                kind: job.kind,
              });
            }
          },
        );
        metrics.set(
          'pgkeep_last_success_timestamp_seconds',
          'when the last successful operation of each kind ended (unix time)',
          Date.now() / 1000,
          { kind: job.kind },
        );
        metrics.inc(
          'pgkeep_backup_bytes_total',
          'stored bytes of backups taken by the service',
          { kind: job.kind },
          bytes,
        );
        onEvent?.({ type: 'backup-finished', kind: job.kind, ms: Date.now() - started, bytes });
      } catch (error) {
        if (error instanceof BackupRunningError) {
          metrics.inc(
            'pgkeep_backup_skipped_total',
            'scheduled backups skipped because another was running',
            {
              kind: job.kind,
            },
          );
          onEvent?.({ type: 'backup-skipped', kind: job.kind, reason: error.message });
        } else {
          metrics.inc('pgkeep_failures_total', 'failed operations of each kind', { kind: job.kind });
          onEvent?.({ type: 'backup-failed', kind: job.kind, error: error as Error });
        }
      }
    })();
    this.#running.add(run);
    void run.finally(() => this.#running.delete(run));
    return run;
  }

  /**
   * Stops scheduling, aborts a running backup (its unfinished object is never visible: the storage
   * contract; and without its manifest the backup does not exist) and waits for it to wind down.
   */
  async stop(): Promise<void> {
    for (const cron of this.#crons) cron.stop();
    this.#abort.abort();
    await Promise.allSettled([...this.#running]);
  }
}
