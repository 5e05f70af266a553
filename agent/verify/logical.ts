/**
 * Verifying logical backups: each dump restored by the logical restore into a fresh scratch
 * cluster, as a role that owns the new database but is not a superuser, so the SQL in a dump
 * cannot run programs or read files on the verifier (COPY … PROGRAM, untrusted languages).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest, ManifestObject } from '../../core/manifest.ts';
import { findDump, runLogicalRestore } from '../logical/restore.ts';
import { queryRows } from '../postgres.ts';
import { readManifest } from '../repository.ts';
import {
  initScratchCluster,
  SCRATCH_HBA_CONF,
  type ScratchDirs,
  ScratchServer,
  scratchPgEnv,
  scratchPostgresqlConf,
} from './scratch-cluster.ts';
import type { VerifyDeps, VerifyOptions, VerifyProgress } from './types.ts';

/** The role dumps are restored as: owns what it restores, may not touch the server's host. */
const RESTORE_ROLE = 'pgkeep_restore';

/** The dumps a selection names: one database's, or every dump of one logical backup. */
export async function selectDumps(
  options: VerifyOptions,
  selection: { db: string; backupId?: string | undefined } | { backupId: string },
): Promise<{ manifest: Manifest; dumps: ManifestObject[] }> {
  if ('db' in selection) {
    if (selection.backupId) await readBackupManifest(options, selection.backupId);
    const { manifest, object } = await findDump(
      options.storage,
      options.cluster,
      selection.db,
      selection.backupId,
    );
    return { manifest, dumps: [object] };
  }
  const manifest = await readBackupManifest(options, selection.backupId);
  return { manifest, dumps: manifest.objects.filter((o) => o.role === 'dump') };
}

/** The manifest of `backupId`; a missing one is a wrong id, not a damaged backup. */
export async function readBackupManifest(options: VerifyOptions, backupId: string): Promise<Manifest> {
  // An unknown id is an UnknownBackupError that names the cluster, the repository and the fix.
  return await readManifest(options.storage, options.cluster, backupId);
}

export async function verifyLogical(
  options: VerifyOptions,
  deps: VerifyDeps,
  chosen: { manifest: Manifest; dumps: ManifestObject[] },
  dirs: ScratchDirs,
  pgBin: string | undefined,
  progress: VerifyProgress,
  started: (server: ScratchServer) => void,
): Promise<string[]> {
  const { manifest, dumps } = chosen;
  progress.backupId = manifest.backupId;
  progress.mode = 'logical';
  await initScratchCluster(dirs, pgBin);
  await writeFile(
    join(dirs.dataDir, 'postgresql.conf'),
    scratchPostgresqlConf(dirs.port, dirs.socketDir, { logical: true }),
  );
  await writeFile(join(dirs.dataDir, 'pg_hba.conf'), SCRATCH_HBA_CONF);
  const pg = scratchPgEnv(dirs, pgBin);
  const server = new ScratchServer(dirs, pgBin);
  started(server);
  if (!(await server.waitOpen(pg, 120_000, deps.signal))) {
    throw new Error(`the scratch cluster did not start: ${server.log.slice(-1500)}`);
  }
  await queryRows(pg, `create role ${RESTORE_ROLE} login createdb nosuperuser`);
  const databases = dumps.map((d) => d.database as string);
  // The scratch cluster comes with a "postgres" database; a dump of one replaces it.
  if (databases.includes('postgres')) await queryRows(pg, 'drop database postgres');

  const restorePg = scratchPgEnv(dirs, pgBin, RESTORE_ROLE);
  const restoreStart = performance.now();
  for (const database of databases) {
    deps.onEvent?.({ phase: 'restore', detail: `restoring ${database} from backup ${manifest.backupId}` });
    try {
      await runLogicalRestore({
        storage: options.storage,
        pg: restorePg,
        cluster: options.cluster,
        identities: options.identities,
        database,
        into: database,
        backupId: manifest.backupId,
        portable: true,
      });
    } catch (error) {
      if (isObjectFailure(error)) throw error;
      progress.checks.push({
        name: 'restore',
        passed: false,
        detail: `restoring database "${database}" from backup ${manifest.backupId} failed: ${(error as Error).message}`,
      });
      return [];
    }
  }
  progress.measures.restoreSeconds = (performance.now() - restoreStart) / 1000;
  progress.checks.push({
    name: 'objects',
    passed: true,
    detail: `${dumps.length} dump${dumps.length === 1 ? '' : 's'}: size and sha256 of stored and plaintext bytes match the manifest`,
  });
  progress.checks.push({
    name: 'restore',
    passed: true,
    detail: `restored ${databases.join(', ')} in ${progress.measures.restoreSeconds.toFixed(1)} s (pg_restore --single-transaction)`,
  });
  // A dump is a snapshot taken when pg_dump started: nothing committed later is in it.
  progress.measures.newestCommitTime = manifest.startTime;
  progress.measures.newestCommitSource = 'dump-start';
  return databases;
}

/** A failure of a stored object's bytes (or of the manifest that describes them): exit 5, not 7. */
export function isObjectFailure(error: unknown): boolean {
  const name = error instanceof Error ? error.name : '';
  return ['ObjectIntegrityError', 'AgeDecryptError', 'InvalidManifestError', 'ObjectNotFoundError'].includes(
    name,
  );
}
