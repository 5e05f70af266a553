/**
 * Verifying a stream backup (`pgkeep stream backup`): its one object is read whole, checked
 * against the manifest and decrypted; when the configuration names a restore command for the
 * stream (`verify.streams.<name>.restoreCommand`), the plaintext is streamed into it as `pgkeep
 * stream restore` would, and the command must exit 0. No scratch PostgreSQL is needed: what a
 * stream holds is the command's business, and its restore command is the check it can make.
 */
import { Writable } from 'node:stream';
import type { VerifyCheck } from '../../core/verify-report.ts';
import { ObjectIntegrityError, restoreObject } from '../object-store.ts';
import { findStreamBackup, runStreamRestore, StreamCommandError } from '../stream/stream-backup.ts';
import type { VerifyOptions, VerifyProgress } from './types.ts';

export async function verifyStream(
  options: VerifyOptions,
  selection: { readonly stream: string; readonly backupId?: string | undefined },
  progress: VerifyProgress,
): Promise<void> {
  progress.mode = 'stream';
  const manifest = await findStreamBackup(
    options.storage,
    options.cluster,
    selection.stream,
    selection.backupId ?? 'latest',
  );
  progress.backupId = manifest.backupId;
  const started = Date.now();
  const checks: VerifyCheck[] = progress.checks;
  try {
    for (const object of manifest.objects) {
      const sink = new Writable({ write: (_chunk, _encoding, done) => done() });
      await restoreObject(
        { storage: options.storage, identities: options.identities, key: object.key, expected: object },
        sink,
      );
    }
    checks.push({
      name: 'objects',
      passed: true,
      detail: `${manifest.objects.length} object checked against the manifest and decrypted`,
    });
  } catch (error) {
    if (!(error instanceof ObjectIntegrityError)) throw error;
    checks.push({ name: 'objects', passed: false, detail: error.message });
    return;
  }
  const restoreCommand = options.streamRestoreCommands?.[selection.stream];
  if (restoreCommand === undefined) return;
  try {
    await runStreamRestore({
      storage: options.storage,
      cluster: options.cluster,
      name: selection.stream,
      backup: manifest.backupId,
      identities: options.identities,
      command: { program: 'sh', args: ['-c', restoreCommand] },
    });
    checks.push({ name: 'restore', passed: true, detail: `restore command exited 0: ${restoreCommand}` });
    progress.measures.restoreSeconds = (Date.now() - started) / 1000;
  } catch (error) {
    if (!(error instanceof StreamCommandError || error instanceof ObjectIntegrityError)) throw error;
    checks.push({ name: 'restore', passed: false, detail: error.message });
  }
}
