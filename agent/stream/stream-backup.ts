/**
 * Stream backups: the stdout of any command (a database's own dump tool, `pg_dumpall`, a tar of a
 * directory) through the same data path as a dump — hash, zstd, age, storage — with a manifest
 * written last, and restores that stream the plaintext into any command's stdin. This is what a
 * NixOS host's `databasebackup` contract asks a backup provider for (deploy/nixos/).
 */
import { spawn } from 'node:child_process';
import { newBackupId, streamObjectKey } from '../../core/keys.ts';
import { MANIFEST_FORMAT, type Manifest, type ManifestObject } from '../../core/manifest.ts';
import type { Storage } from '../../storage/storage.ts';
import { checkedOutput, collectTail, describeExit, exitOf } from '../child-process.ts';
import { ObjectIntegrityError, restoreObject, type StoredObject, storeObject } from '../object-store.ts';
import { recipientFingerprint } from '../recipients.ts';
import { backupStartTime, listManifests, readManifest, writeManifest } from '../repository.ts';
import { AGENT_VERSION } from '../version.ts';

/** The command a stream backup reads from or a restore writes into failed, or could not start. */
export class StreamCommandError extends Error {
  override name = 'StreamCommandError';
}

/** No stream backup matches what was asked for. */
export class StreamNotFoundError extends Error {
  override name = 'StreamNotFoundError';
}

export interface StreamCommand {
  readonly program: string;
  readonly args: readonly string[];
  /** The command's environment. @default - the agent's own */
  readonly env?: NodeJS.ProcessEnv;
}

export interface StreamBackupOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly name: string;
  readonly recipients: readonly string[];
  readonly command: StreamCommand;
  readonly zstdLevel?: number;
  readonly now?: () => Date;
  readonly onProgress?: (plaintextBytes: number) => void;
}

function describe(command: StreamCommand): string {
  return [command.program, ...command.args].join(' ');
}

/**
 * Runs the command and stores its stdout as one object, then the manifest. If the command exits
 * non-zero (or is killed) the stored stream fails before it ends, so the driver removes what it had
 * begun and no manifest is written: the backup does not exist.
 */
export async function runStreamBackup(options: StreamBackupOptions): Promise<Manifest> {
  const now = options.now ?? (() => new Date());
  const startTime = await backupStartTime(options.storage, options.now);
  const backupId = newBackupId(startTime);
  const key = streamObjectKey(options.cluster, options.name, backupId);
  const child = spawn(options.command.program, [...options.command.args], {
    env: options.command.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = checkedOutput(
    child,
    (detail) => new StreamCommandError(`backup command "${describe(options.command)}" ${detail}`),
  );
  const stored: StoredObject = await storeObject({
    storage: options.storage,
    key,
    source: output,
    recipients: options.recipients,
    zstdLevel: options.zstdLevel,
    onProgress: options.onProgress,
  });
  const object: ManifestObject = { ...stored, role: 'stream', codec: 'zstd', encryption: 'age-v1' };
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    backupId,
    cluster: options.cluster,
    kind: 'stream',
    streamName: options.name,
    startTime: startTime.toISOString(),
    stopTime: now().toISOString(),
    objects: [object],
    recipientFingerprints: options.recipients.map(recipientFingerprint),
    agentVersion: AGENT_VERSION,
  };
  await writeManifest(options.storage, manifest);
  return manifest;
}

/** The stream backups taken under `name`, oldest first. */
export async function listStreamBackups(
  storage: Storage,
  cluster: string,
  name: string,
): Promise<Manifest[]> {
  return (await listManifests(storage, cluster)).filter((m) => m.kind === 'stream' && m.streamName === name);
}

/** `latest`, or a backup id that must be a stream backup of `name`. */
export async function findStreamBackup(
  storage: Storage,
  cluster: string,
  name: string,
  backup: string,
): Promise<Manifest> {
  if (backup === 'latest') {
    const newest = (await listStreamBackups(storage, cluster, name)).at(-1);
    if (!newest)
      throw new StreamNotFoundError(
        `no stream backup named "${name}" in cluster "${cluster}" (${storage.displayUrl}): take one with pgkeep stream backup --name ${name} -- COMMAND`,
      );
    return newest;
  }
  const manifest = await readManifest(storage, cluster, backup).catch((error: unknown) => {
    if ((error as Error).name === 'UnknownBackupError')
      throw new StreamNotFoundError(
        `no backup ${backup} in cluster "${cluster}": run pgkeep stream snapshots --name ${name} to see the ids`,
      );
    throw error;
  });
  if (manifest.kind !== 'stream' || manifest.streamName !== name)
    throw new StreamNotFoundError(
      `backup ${backup} is not a stream backup named "${name}": run pgkeep stream snapshots --name ${name} to see the ids`,
    );
  return manifest;
}

export interface StreamRestoreOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly name: string;
  /** A backup id, or `latest`. */
  readonly backup: string;
  readonly identities: readonly string[];
  readonly command: StreamCommand;
}

/**
 * Streams the backup's plaintext, checked as it goes, into the command's stdin. Resolves only when
 * every byte passed its checks and the command exited 0. A damaged object is reported as such even
 * when the command, cut off, failed first.
 */
export async function runStreamRestore(options: StreamRestoreOptions): Promise<Manifest> {
  const manifest = await findStreamBackup(options.storage, options.cluster, options.name, options.backup);
  const object = manifest.objects[0];
  if (!object || manifest.objects.length !== 1)
    throw new ObjectIntegrityError(
      `manifest of ${manifest.backupId}`,
      `a stream backup lists exactly one object, found ${manifest.objects.length}`,
    );
  const child = spawn(options.command.program, [...options.command.args], {
    env: options.command.env ?? process.env,
    stdio: ['pipe', 'inherit', 'pipe'],
  });
  const stderr = collectTail(child);
  const exited = exitOf(child);
  const stdin = child.stdin;
  if (!stdin) throw new StreamCommandError(`restore command "${describe(options.command)}" has no stdin`);
  const streamed = restoreObject(
    { storage: options.storage, key: object.key, identities: options.identities, expected: object },
    stdin,
  ).catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });
  const [stream, exit] = await Promise.allSettled([streamed, exited]);
  if (stream.status === 'rejected' && stream.reason instanceof ObjectIntegrityError) throw stream.reason;
  if (exit.status === 'rejected')
    throw new StreamCommandError(
      `restore command "${describe(options.command)}" could not be started: ${(exit.reason as Error).message}`,
    );
  const { code, signal } = exit.value;
  if (code !== 0)
    throw new StreamCommandError(
      `restore command "${describe(options.command)}" ${describeExit(code, signal)}: ${stderr().trim()}`,
    );
  if (stream.status === 'rejected') throw stream.reason;
  return manifest;
}
