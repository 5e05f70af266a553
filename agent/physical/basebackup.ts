/**
 * A physical base backup: `pg_basebackup` in tar format, each archive streamed through the object
 * pipeline (sha256 -> zstd -> age -> sha256 -> storage), then — only once the WAL from the start to
 * the stop LSN is in the repository — the manifest, written last.
 *
 * Without tablespaces (the common case) pg_basebackup writes base.tar to its stdout. It cannot write
 * more than one archive to stdout, so with tablespaces it writes each tar file into a named pipe in
 * the spool, read by its pipeline as it is written (agent/physical/archive-pipes.ts): in neither
 * case does a plaintext byte touch the disk.
 *
 * The WAL written during the backup is also put in base.tar (`-X fetch`): the restore still reads
 * WAL through restore_command, but the backup stays restorable to its end point without the
 * archive, and pg_basebackup reports the start and end LSN only when it includes WAL.
 */

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { baseBackupKey, manifestKey, newBackupId } from '../../core/keys.ts';
import {
  MANIFEST_FORMAT,
  type Manifest,
  type ManifestObject,
  serializeManifest,
} from '../../core/manifest.ts';
import { walFileNameForLsn } from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';
import { storeObject } from '../object-store.ts';
import { type PgEnv, pgProgram, queryRows, serverFacts, spawnProducer } from '../postgres.ts';
import { recipientFingerprint } from '../recipients.ts';
import { backupStartTime } from '../repository.ts';
import { storedWalVersions } from '../wal/push.ts';
import {
  openArchivePipes,
  removeStaging,
  runIntoPipes,
  stagingDirName,
  sweepStaleStaging,
} from './archive-pipes.ts';
import { assertArchivesHere } from './archive-preflight.ts';

export interface BaseBackupOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly recipients: readonly string[];
  readonly pg: PgEnv;
  /** Where the tar files of a cluster with tablespaces are staged. */
  readonly spoolDir: string;
  readonly zstdLevel?: number;
  /** How long to wait for the backup's last WAL file to reach the repository. @default 600 s */
  readonly walWaitSeconds?: number;
  readonly agentVersion: string;
  readonly now?: () => Date;
  readonly onProgress?: (event: { archive: string; plaintextBytes: number }) => void;
  /** Stops pg_basebackup; the backup then fails without a manifest and no partial object. */
  readonly signal?: AbortSignal;
}

export interface BaseBackupResult {
  readonly manifest: Manifest;
  readonly manifestKey: string;
}

/** What pg_basebackup --verbose says about the WAL range. */
export function parseBaseBackupLog(stderr: string): { startLsn: string; timeline: number; stopLsn: string } {
  const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/.exec(stderr);
  const stop = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/.exec(stderr);
  if (!start?.[1] || !start[2] || !stop?.[1]) {
    throw new Error(
      `could not find the WAL start and end points in pg_basebackup's output:\n${stderr.slice(-2000)}`,
    );
  }
  return { startLsn: start[1], timeline: Number(start[2]), stopLsn: stop[1] };
}

/** The LSN one byte before `lsn`: the end point is exclusive, the last WAL byte needed is before it. */
function previousByte(lsn: string): string {
  const [hi, lo] = lsn.split('/').map((p) => BigInt(`0x${p}`)) as [bigint, bigint];
  const value = ((hi << 32n) | lo) - 1n;
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Takes a base backup; resolves once the manifest is written. */
export async function takeBaseBackup(options: BaseBackupOptions): Promise<BaseBackupResult> {
  const now = options.now ?? (() => new Date());
  // Callers hold the cluster's backup lock: no other backup's staging directory can be in use.
  const clusterSpool = join(options.spoolDir, options.cluster);
  await mkdir(clusterSpool, { recursive: true, mode: 0o700 });
  await sweepStaleStaging(clusterSpool);
  const startTime = await backupStartTime(options.storage, options.now);
  const backupId = newBackupId(startTime);
  // Before anything is uploaded: the agent cannot delete an archive whose WAL never arrives.
  await assertArchivesHere({ storage: options.storage, cluster: options.cluster, pg: options.pg });
  const facts = await serverFacts(options.pg);
  const tablespaces = await queryRows(
    options.pg,
    "select oid from pg_tablespace where spcname not in ('pg_default', 'pg_global')",
  );
  const label = `pgkeep ${backupId}`;
  const args = ['-Ft', '-X', 'fetch', '-c', 'fast', '-v', '--no-manifest', '-l', label];
  const objects: ManifestObject[] = [];
  let stderr = '';

  const store = async (archive: 'base' | number, source: NodeJS.ReadableStream) => {
    const key = baseBackupKey(options.cluster, backupId, archive);
    const stored = await storeObject({
      storage: options.storage,
      key,
      source: source as import('node:stream').Readable,
      recipients: options.recipients,
      ...(options.zstdLevel === undefined ? {} : { zstdLevel: options.zstdLevel }),
      ...(options.onProgress
        ? { onProgress: (n: number) => options.onProgress?.({ archive: String(archive), plaintextBytes: n }) }
        : {}),
    });
    objects.push({
      ...stored,
      role: archive === 'base' ? 'base' : 'tablespace',
      ...(archive === 'base' ? {} : { tablespaceOid: archive }),
      codec: 'zstd',
      encryption: 'age-v1',
    });
  };

  if (tablespaces.length === 0) {
    const { child, output } = spawnProducer(options.pg, 'pg_basebackup', [...args, '-D', '-']);
    options.signal?.addEventListener('abort', () => child.kill('SIGTERM'), { once: true });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await store('base', output);
  } else {
    const staging = join(clusterSpool, stagingDirName(backupId));
    const oids = tablespaces.map((row) => Number(row[0])).sort((a, b) => a - b);
    try {
      const pipes = await openArchivePipes(staging, ['base', ...oids]);
      const stores = [...pipes.archives].map(([archive, source]) => store(archive, source));
      stores.forEach((s) => {
        s.catch(() => undefined);
      });
      // Messages in English: the LSNs are read from them.
      const exited = await runIntoPipes({
        program: pgProgram(options.pg, 'pg_basebackup'),
        args: [...args, '--no-sync', '-D', pipes.directory],
        env: { ...options.pg.env, LC_MESSAGES: 'C', LC_ALL: '' },
        pipes,
        stagingDir: staging,
        ...(options.signal ? { signal: options.signal } : {}),
        onStderr: (text) => {
          stderr += text;
        },
      }).then(
        () => undefined,
        (error: Error) => error,
      );
      pipes.finish(exited);
      await Promise.all(stores);
      if (exited) throw exited;
    } finally {
      await removeStaging(staging);
    }
  }

  const { startLsn, timeline, stopLsn } = parseBaseBackupLog(stderr);
  const startWalFile = walFileNameForLsn(timeline, startLsn);
  const stopWalFile = walFileNameForLsn(timeline, previousByte(stopLsn));
  await waitForWal(options, stopWalFile, (options.walWaitSeconds ?? 600) * 1000);
  options.signal?.throwIfAborted();

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    backupId,
    cluster: options.cluster,
    kind: 'base',
    pgVersionNum: facts.versionNum,
    systemIdentifier: facts.systemIdentifier,
    startTime: startTime.toISOString(),
    stopTime: now().toISOString(),
    timeline,
    startLsn,
    stopLsn,
    startWalFile,
    stopWalFile,
    objects: objects.sort((a, b) =>
      a.role === b.role ? (a.tablespaceOid ?? 0) - (b.tablespaceOid ?? 0) : a.role === 'base' ? -1 : 1,
    ),
    recipientFingerprints: options.recipients.map(recipientFingerprint),
    agentVersion: options.agentVersion,
  };
  const key = manifestKey(options.cluster, backupId);
  const { Readable } = await import('node:stream');
  await options.storage.put(key, Readable.from([Buffer.from(serializeManifest(manifest))]), {
    ifAbsent: true,
  });
  return { manifest, manifestKey: key };
}

/**
 * Waits until the backup's last WAL file is in the repository: without it the backup cannot be made
 * consistent. PostgreSQL switched to a new segment at the backup's end, so its archiver (through
 * `pgkeep wal-push`) delivers it; the wait only bounds how long that may take.
 */
async function waitForWal(options: BaseBackupOptions, walFileName: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
    const versions = await storedWalVersions(options.storage, options.cluster, walFileName).catch(() => []);
    if (versions.length > 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `base backup is not usable: WAL file ${walFileName}, needed to make it consistent, did not reach ` +
          `${options.storage.displayUrl} within ${Math.round(timeoutMs / 1000)} s. Check that archive_mode is on and ` +
          'archive_command runs `pgkeep wal-push %p` (pg_stat_archiver shows its failures); the manifest was not written',
      );
    }
    await sleep(delay);
  }
}
