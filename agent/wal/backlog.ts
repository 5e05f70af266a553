/**
 * The WAL backlog policy (modelled on pgBackRest's archive-push-queue-max): how much WAL pg_wal
 * holds that PostgreSQL marked ready but pgkeep has not archived, when that deserves a warning,
 * and, at `wal.maxBacklogBytes` with `wal.onBacklogFull: drop`, the record of what was given up.
 *
 * A dropped segment is remembered in the spool at once (the repository is down when it happens)
 * and published as `v1/<cluster>/wal-gaps/<first>-<last>.json` (core/keys.ts), create-only, once
 * the repository answers again. A restore refuses to replay across a published gap.
 */
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { walGapKey, walGapsPrefix } from '../../core/keys.ts';
import { parseWalFileName, segmentNumberOf } from '../../core/wal-names.ts';
import { ObjectExistsError, type Storage } from '../../storage/storage.ts';

export interface BacklogSettings {
  /** 0: no limit. */
  readonly maxBacklogBytes: number;
  readonly backlogWarnBytes?: number;
  readonly onBacklogFull: 'fail' | 'drop';
}

export type BacklogLevel = 'ok' | 'warn' | 'full';

/** Bytes of the segments in `pgWalDir` that have a `.ready` status: waiting to be archived. */
export async function walBacklogBytes(pgWalDir: string): Promise<number> {
  const entries = await readdir(join(pgWalDir, 'archive_status')).catch(() => [] as string[]);
  let bytes = 0;
  for (const entry of entries) {
    if (!entry.endsWith('.ready')) continue;
    const info = await stat(join(pgWalDir, entry.slice(0, -'.ready'.length))).catch(() => undefined);
    bytes += info?.size ?? 0;
  }
  return bytes;
}

/** The warning threshold: wal.backlogWarnBytes, else half the limit; undefined when neither is set. */
export function backlogWarnBytes(settings: BacklogSettings): number | undefined {
  if (settings.backlogWarnBytes !== undefined && settings.backlogWarnBytes > 0)
    return settings.backlogWarnBytes;
  return settings.maxBacklogBytes > 0 ? Math.floor(settings.maxBacklogBytes / 2) : undefined;
}

/** Where `bytes` of backlog stand against the settings: the one rule wal-push and the service follow. */
export function backlogLevel(settings: BacklogSettings, bytes: number): BacklogLevel {
  if (settings.maxBacklogBytes > 0 && bytes >= settings.maxBacklogBytes) return 'full';
  const warn = backlogWarnBytes(settings);
  return warn !== undefined && bytes >= warn ? 'warn' : 'ok';
}

/**
 * The backlog of `pgWalDir` against the settings. Without a threshold (the default) nothing is
 * compared, so pg_wal is not scanned: the scan stats every `.ready` segment, a cost wal-push would
 * otherwise pay per segment for a figure it throws away.
 */
export async function measureBacklog(
  settings: BacklogSettings,
  pgWalDir: string,
): Promise<{ readonly bytes: number; readonly level: BacklogLevel }> {
  if (backlogWarnBytes(settings) === undefined) return { bytes: 0, level: 'ok' };
  const bytes = await walBacklogBytes(pgWalDir);
  return { bytes, level: backlogLevel(settings, bytes) };
}

/** `123.4 MiB` for messages. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** A gap as recorded in the repository. */
export interface WalGapRecord {
  readonly first: string;
  readonly last: string;
  /** When the host dropped the first and the last segment (its own clock). */
  readonly firstDroppedAt: string;
  readonly lastDroppedAt: string;
  readonly reason: string;
}

function gapsDir(spoolRoot: string): string {
  return join(spoolRoot, 'dropped');
}

/** Present from a drop until a base backup taken after it (the service's BacklogWatch) succeeds. */
export function baseBackupNeededFile(spoolRoot: string): string {
  return join(spoolRoot, 'dropped-wal-needs-base-backup');
}

/** Whether WAL was dropped since the last base backup the service took for it. */
export async function baseBackupNeeded(spoolRoot: string): Promise<boolean> {
  return stat(baseBackupNeededFile(spoolRoot)).then(
    () => true,
    () => false,
  );
}

/** Whether dropped segments wait to be recorded in the repository. */
export async function droppedWalPending(spoolRoot: string): Promise<boolean> {
  return (await readdir(gapsDir(spoolRoot)).catch(() => [] as string[])).length > 0;
}

/**
 * Remembers that `walFileName` was dropped, until {@link publishDroppedWal} records it in the
 * repository, and that a base backup is needed after it.
 */
export async function rememberDroppedWal(
  spoolRoot: string,
  walFileName: string,
  reason: string,
): Promise<void> {
  await mkdir(gapsDir(spoolRoot), { recursive: true, mode: 0o700 });
  await writeFile(baseBackupNeededFile(spoolRoot), '', { mode: 0o600 });
  const record = { name: walFileName, droppedAt: new Date().toISOString(), reason };
  await writeFile(join(gapsDir(spoolRoot), walFileName), JSON.stringify(record), { mode: 0o600 });
}

/**
 * Publishes every remembered dropped segment as gap records (consecutive segments of a timeline
 * in one), create-only, and forgets them once stored. Returns the records written; throws, keeping
 * them, while the repository is unavailable.
 */
export async function publishDroppedWal(
  storage: Storage,
  cluster: string,
  spoolRoot: string,
): Promise<WalGapRecord[]> {
  const names = await readdir(gapsDir(spoolRoot)).catch(() => [] as string[]);
  const dropped: { name: string; timeline: number; number: number; droppedAt: string; reason: string }[] = [];
  for (const name of names) {
    const parsed = parseWalFileName(name);
    if (parsed?.kind !== 'segment') continue;
    const record = JSON.parse(await readFile(join(gapsDir(spoolRoot), name), 'utf8')) as {
      droppedAt: string;
      reason: string;
    };
    dropped.push({ name, timeline: parsed.timeline, number: segmentNumberOf(name), ...record });
  }
  dropped.sort((a, b) => a.timeline - b.timeline || a.number - b.number);
  const runs: (typeof dropped)[] = [];
  for (const d of dropped) {
    const run = runs[runs.length - 1];
    const prev = run?.[run.length - 1];
    if (run && prev && prev.timeline === d.timeline && prev.number + 1 === d.number) run.push(d);
    else runs.push([d]);
  }
  const written: WalGapRecord[] = [];
  for (const run of runs) {
    const first = run[0] as (typeof dropped)[number];
    const last = run[run.length - 1] as (typeof dropped)[number];
    const record: WalGapRecord = {
      first: first.name,
      last: last.name,
      firstDroppedAt: first.droppedAt,
      lastDroppedAt: last.droppedAt,
      reason: first.reason,
    };
    try {
      await storage.put(walGapKey(cluster, first.name, last.name), Readable.from([JSON.stringify(record)]), {
        ifAbsent: true,
      });
    } catch (error) {
      if (!(error instanceof ObjectExistsError)) throw error;
    }
    for (const d of run) await rm(join(gapsDir(spoolRoot), d.name), { force: true });
    written.push(record);
  }
  return written;
}

/**
 * The recorded gaps of a cluster, oldest first. Written by the host, so only their names are
 * trusted: a record whose name does not parse is skipped, and the segment range comes from the key.
 */
export async function listRecordedGaps(
  storage: Storage,
  cluster: string,
): Promise<{ first: string; last: string; key: string; detail?: WalGapRecord }[]> {
  const gaps = [];
  const prefix = walGapsPrefix(cluster);
  for await (const object of storage.list(prefix)) {
    const match = /^([0-9A-F]{24})-([0-9A-F]{24})\.json$/.exec(object.key.slice(prefix.length));
    if (!match) continue;
    const [, first, last] = match as unknown as [string, string, string];
    const detail = await text(await storage.get(object.key))
      .then((body) => JSON.parse(body) as WalGapRecord)
      .catch(() => undefined);
    gaps.push({ first, last, key: object.key, ...(detail ? { detail } : {}) });
  }
  return gaps.sort((a, b) => a.first.localeCompare(b.first));
}
