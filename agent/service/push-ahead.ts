/**
 * The service's WAL pusher: watches `pg_wal/archive_status/*.ready` and pushes each ready file
 * with bounded parallelism, ahead of PostgreSQL's one-at-a-time archive_command, then writes the
 * spool marker that lets archive_command return at once (wal/spool.ts explains why a marker is
 * safe to trust). Markers are removed once PostgreSQL has marked the file `.done` or removed it.
 *
 * inotify (fs.watch) makes it react within milliseconds; a periodic rescan covers what a watch
 * can miss (overflow, a re-created directory).
 */
import { type FSWatcher, watch } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseWalFileName } from '../../core/wal-names.ts';
import type { WalPushResult } from '../wal/push.ts';
import type { WalSpool } from '../wal/spool.ts';
import type { Metrics } from './metrics.ts';

export type PushAheadEvent =
  | { type: 'pushed'; walFileName: string; outcome: WalPushResult['outcome']; ms: number }
  | { type: 'push-failed'; walFileName: string; error: Error; retryInMs: number };

export interface PushAheadOptions {
  readonly pgWalDir: string;
  readonly spool: WalSpool;
  /** The repository's display URL, recorded in markers. */
  readonly repository: string;
  readonly parallelism: number;
  /** Pushes one file (wal/push.ts pushWalFile with the service's settings). */
  readonly push: (path: string) => Promise<WalPushResult>;
  readonly metrics: Metrics;
  readonly onEvent?: (event: PushAheadEvent) => void;
  /** @default 1000 */
  readonly rescanIntervalMs?: number;
}

const MAX_BACKOFF_MS = 30_000;

export class WalPushAhead {
  readonly #options: PushAheadOptions;
  readonly #statusDir: string;
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #backoff = new Map<string, { until: number; delayMs: number }>();
  #pending: string[] = [];
  /** Names with a claim in the spool: queued or in flight (wal-push waits only for those). */
  readonly #claimed = new Set<string>();
  #ready = new Set<string>();
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #scanning: Promise<void> | undefined;
  #rescanRequested = false;
  #stopped = false;

  constructor(options: PushAheadOptions) {
    this.#options = options;
    this.#statusDir = join(options.pgWalDir, 'archive_status');
    const m = options.metrics;
    m.onCollect(async () => {
      m.set(
        'pgkeep_wal_queue_depth',
        'WAL files ready to archive that the service has not pushed yet',
        this.queueDepth,
      );
      m.set('pgkeep_wal_push_in_flight', 'WAL files the service is pushing right now', this.#inFlight.size);
      m.set(
        'pgkeep_archive_lag_segments',
        "WAL files ready that PostgreSQL's archive_command has not completed (pg_wal/archive_status/*.ready)",
        this.#ready.size,
      );
      m.set(
        'pgkeep_archive_lag_seconds',
        'age of the oldest WAL file waiting to be pushed by the service',
        await this.#oldestPendingAgeSeconds(),
      );
    });
  }

  /** Ready files the service has not pushed (queued or in flight). */
  get queueDepth(): number {
    return this.#pending.length + this.#inFlight.size;
  }

  start(): void {
    try {
      this.#watcher = watch(this.#statusDir, () => this.requestScan());
      this.#watcher.on('error', () => {
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch {
      // No archive_status yet (archive_mode off, or not created): the periodic scan still works.
    }
    this.#timer = setInterval(() => this.requestScan(), this.#options.rescanIntervalMs ?? 1000);
    this.requestScan();
  }

  /** Stops watching and waits for the pushes in flight to finish (never abandons one half-way). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    if (this.#timer) clearInterval(this.#timer);
    await this.#scanning;
    await Promise.allSettled([...this.#inFlight.values()]);
  }

  /** Resolves once every file ready now has been pushed or has failed once (for tests and the bench). */
  async settle(): Promise<void> {
    await this.scanNow();
    while (this.#inFlight.size > 0 || this.#pending.length > 0) {
      await Promise.race([...this.#inFlight.values()]);
      await this.scanNow();
    }
  }

  requestScan(): void {
    if (this.#stopped) return;
    if (this.#scanning) {
      this.#rescanRequested = true;
      return;
    }
    this.#scanning = this.#scan().finally(() => {
      this.#scanning = undefined;
      if (this.#rescanRequested) {
        this.#rescanRequested = false;
        this.requestScan();
      }
    });
  }

  async scanNow(): Promise<void> {
    await this.#scanning;
    this.requestScan();
    await this.#scanning;
  }

  async #scan(): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.#statusDir);
    } catch {
      return;
    }
    const ready = new Set(
      entries.filter((e) => e.endsWith('.ready')).map((e) => e.slice(0, -'.ready'.length)),
    );
    this.#ready = ready;
    const markers = new Set(await this.#options.spool.listMarkers());
    // PostgreSQL has the file as archived (.done) or removed it: the marker is no longer needed, and
    // keeping it could only ever be stale.
    for (const name of markers) {
      if (!ready.has(name) && !this.#inFlight.has(name)) await this.#options.spool.removeMarker(name);
    }
    const now = Date.now();
    this.#pending = [...ready]
      .filter((name) => parseWalFileName(name) !== undefined)
      .filter((name) => !markers.has(name) && !this.#inFlight.has(name))
      .filter((name) => (this.#backoff.get(name)?.until ?? 0) <= now)
      // Timeline history first (recovery needs it to follow a timeline), then in WAL order.
      .sort((a, b) => Number(b.endsWith('.history')) - Number(a.endsWith('.history')) || a.localeCompare(b));
    await this.#updateClaims();
    this.#dispatch();
  }

  /**
   * Claims what is queued or in flight and drops the claims of anything else (pushed, failed and
   * backing off, or gone): archive_command and wal-push wait for this process exactly for the
   * files it is going to push.
   */
  async #updateClaims(): Promise<void> {
    const { spool } = this.#options;
    const wanted = new Set([...this.#pending, ...this.#inFlight.keys()]);
    for (const name of wanted) {
      if (this.#claimed.has(name)) continue;
      this.#claimed.add(name);
      await spool.claim(name).catch(() => undefined);
    }
    for (const name of this.#claimed) {
      if (wanted.has(name)) continue;
      this.#claimed.delete(name);
      await spool.unclaim(name).catch(() => undefined);
    }
  }

  #dispatch(): void {
    while (!this.#stopped && this.#inFlight.size < this.#options.parallelism && this.#pending.length > 0) {
      const name = this.#pending.shift() as string;
      const job = this.#pushOne(name).finally(() => {
        this.#inFlight.delete(name);
        this.#dispatch();
      });
      this.#inFlight.set(name, job);
    }
  }

  async #pushOne(name: string): Promise<void> {
    const { metrics, spool } = this.#options;
    const path = join(this.#options.pgWalDir, name);
    const started = Date.now();
    // Normally claimed while it was queued (#updateClaims).
    if (!this.#claimed.has(name)) {
      this.#claimed.add(name);
      await spool.claim(name).catch(() => undefined);
    }
    try {
      const result = await this.#options.push(path);
      await spool.markPushed(
        name,
        {
          key: result.key,
          plaintextSha256: result.plaintextSha256,
          plaintextSizeBytes: result.plaintextSizeBytes,
          repository: this.#options.repository,
          pushedAt: new Date().toISOString(),
        },
        path,
      );
      this.#backoff.delete(name);
      metrics.inc('pgkeep_wal_pushed_total', 'WAL files pushed by the service', { outcome: result.outcome });
      metrics.inc(
        'pgkeep_wal_pushed_bytes_total',
        'stored (compressed, encrypted) bytes of WAL pushed by the service',
        {},
        result.sizeBytes ?? 0,
      );
      metrics.set(
        'pgkeep_last_success_timestamp_seconds',
        'when the last successful operation of each kind ended (unix time)',
        Date.now() / 1000,
        { kind: 'wal' },
      );
      this.#options.onEvent?.({
        type: 'pushed',
        walFileName: name,
        outcome: result.outcome,
        ms: Date.now() - started,
      });
    } catch (error) {
      // PostgreSQL archived and recycled it meanwhile: nothing left to do.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      const delayMs = Math.min((this.#backoff.get(name)?.delayMs ?? 500) * 2, MAX_BACKOFF_MS);
      this.#backoff.set(name, { until: Date.now() + delayMs, delayMs });
      metrics.inc('pgkeep_failures_total', 'failed operations of each kind', { kind: 'wal' });
      this.#options.onEvent?.({
        type: 'push-failed',
        walFileName: name,
        error: error as Error,
        retryInMs: delayMs,
      });
    } finally {
      // After the marker: wal-push finds the marker when it sees the claim gone.
      this.#claimed.delete(name);
      await spool.unclaim(name).catch(() => undefined);
    }
  }

  async #oldestPendingAgeSeconds(): Promise<number> {
    let oldest = Date.now();
    for (const name of [...this.#pending, ...this.#inFlight.keys()]) {
      const info = await stat(join(this.#statusDir, `${name}.ready`)).catch(() => undefined);
      if (info && info.mtimeMs < oldest) oldest = info.mtimeMs;
    }
    return Math.max(0, (Date.now() - oldest) / 1000);
  }
}
