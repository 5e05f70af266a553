/**
 * The service's side of the WAL backlog policy (agent/wal/backlog.ts decides the levels): it
 * publishes the backlog as metrics, says so in the log when it passes the warning threshold or the
 * limit, records segments wal-push dropped as soon as the repository answers, and then asks for a
 * new base backup, the only way point-in-time recovery can reach past the gap again.
 */
import { rm } from 'node:fs/promises';
import type { Storage } from '../../storage/storage.ts';
import {
  type BacklogLevel,
  type BacklogSettings,
  backlogLevel,
  backlogWarnBytes,
  baseBackupNeeded,
  baseBackupNeededFile,
  droppedWalPending,
  listRecordedGaps,
  publishDroppedWal,
  type WalGapRecord,
  walBacklogBytes,
} from '../wal/backlog.ts';
import type { Metrics } from './metrics.ts';

export type BacklogEvent =
  | { type: 'wal-backlog'; level: BacklogLevel; bytes: number; warnBytes: number; maxBytes: number }
  | { type: 'wal-gap-recorded'; gap: WalGapRecord }
  | { type: 'wal-gap-backup'; gaps: readonly string[] };

export interface BacklogWatchOptions {
  readonly pgWalDir: string;
  readonly settings: BacklogSettings;
  readonly storage: Storage;
  readonly cluster: string;
  /** The spool of the data directory, where wal-push remembers what it dropped. */
  readonly spoolRoot: string;
  readonly metrics: Metrics;
  /**
   * Takes a base backup once the repository answers after WAL was dropped; resolves true when it
   * succeeded (then the need is cleared), false when it did not (tried again at the next check).
   */
  readonly takeBaseBackup: () => Promise<boolean>;
  readonly onEvent?: (event: BacklogEvent) => void;
  /** @default 10 s */
  readonly intervalMs?: number;
}

export class BacklogWatch {
  readonly #options: BacklogWatchOptions;
  #level: BacklogLevel = 'ok';
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  #backup: Promise<void> | undefined;

  constructor(options: BacklogWatchOptions) {
    this.#options = options;
  }

  start(): void {
    const run = () => {
      this.#checking = this.check().finally(() => {
        this.#checking = undefined;
      });
    };
    run();
    this.#timer = setInterval(() => {
      if (!this.#checking) run();
    }, this.#options.intervalMs ?? 10_000);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#checking;
    await this.#backup;
  }

  /** One look at the backlog and the dropped segments; never rejects. */
  async check(): Promise<void> {
    const { metrics, settings } = this.#options;
    const bytes = await walBacklogBytes(this.#options.pgWalDir);
    const level = backlogLevel(settings, bytes);
    const warnBytes = backlogWarnBytes(settings) ?? 0;
    metrics.set('pgkeep_wal_backlog_bytes', 'bytes of WAL ready in pg_wal and not yet archived', bytes);
    metrics.set(
      'pgkeep_wal_backlog_level',
      'the WAL backlog against its thresholds: 0 below the warning, 1 past wal.backlogWarnBytes, 2 at wal.maxBacklogBytes',
      level === 'ok' ? 0 : level === 'warn' ? 1 : 2,
    );
    if (level !== this.#level) {
      this.#options.onEvent?.({
        type: 'wal-backlog',
        level,
        bytes,
        warnBytes,
        maxBytes: settings.maxBacklogBytes,
      });
      this.#level = level;
    }
    const gaps = await publishDroppedWal(
      this.#options.storage,
      this.#options.cluster,
      this.#options.spoolRoot,
    ).catch(() => [] as WalGapRecord[]);
    for (const gap of gaps) {
      metrics.inc('pgkeep_wal_gaps_recorded_total', 'WAL gaps recorded after wal.onBacklogFull: drop');
      this.#options.onEvent?.({ type: 'wal-gap-recorded', gap });
    }
    await this.#backupAfterGap();
  }

  /** A base backup after dropped WAL, once every drop is recorded and the repository lists its gaps. */
  async #backupAfterGap(): Promise<void> {
    const { spoolRoot, storage, cluster } = this.#options;
    if (this.#backup || !(await baseBackupNeeded(spoolRoot)) || (await droppedWalPending(spoolRoot))) return;
    const gaps = await listRecordedGaps(storage, cluster).catch(() => undefined);
    if (gaps === undefined) return;
    this.#options.onEvent?.({ type: 'wal-gap-backup', gaps: gaps.map((g) => `${g.first} to ${g.last}`) });
    this.#backup = this.#options
      .takeBaseBackup()
      .then(async (ok) => {
        if (ok) await rm(baseBackupNeededFile(spoolRoot), { force: true });
      })
      .finally(() => {
        this.#backup = undefined;
      });
  }
}
