import { resolve } from 'node:path';
import { assertClusterName } from '../../core/keys.ts';
import {
  ACCEPTED_TARGET_TIME_FORMS,
  parseTargetTime,
  type TargetTime,
} from '../../core/recovery-target-time.ts';
import { ExitCode } from '../exit-codes.ts';
import { type RecoveryTarget, restorePhysical } from '../physical/restore.ts';
import type { ArchiveChoice } from '../physical/restored-marker.ts';
import { readIdentityFile } from '../recipients.ts';
import { archiveCommandLine, restoreCommandLine, WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';
import { assertTimeInArchive, defaultOwner, userIds } from './restore-owner-target.ts';
import { resolveRepository, setUp } from './setup.ts';

const ARCHIVE_SAYS: Record<ArchiveChoice['mode'], string> = {
  off: 'it will not archive (--archive)',
  keep: 'it archives into this cluster with the settings it came with',
  'new-cluster': 'it archives into the cluster named by --archive new-cluster',
};

function archiveChoice(mode: string, name: string | undefined): ArchiveChoice {
  if (mode === 'new-cluster') {
    if (!name)
      throw new UsageError('--archive new-cluster needs the new cluster name: --archive new-cluster NAME');
    assertClusterName(name);
    return { mode, cluster: name };
  }
  if (name !== undefined) throw new UsageError(`unexpected argument "${name}"`);
  if (mode === 'off' || mode === 'keep') return { mode };
  throw new UsageError(`--archive "${mode}": use off, keep or new-cluster NAME`);
}

/** `pgkeep restore --pgdata DIR …`: restore routes here when --pgdata is given. */
export const restorePhysicalCommand: Command = {
  summary: 'lay down a base backup and configure point-in-time recovery',
  usage: `pgkeep restore --pgdata DIR [--backup ID] [--target-time T | --target-lsn L | --target-xid X | --target-name N]
               [--target-action promote|pause|shutdown] [--overwrite] [--tablespace-map OID=DIR…] [--owner USER]
               [--archive off|keep|new-cluster NAME] [--from REPO]

Extracts the base backup into DIR (absent or empty unless --overwrite) and configures recovery:
recovery.signal, and a restore_command that runs pgkeep wal-fetch with this configuration. Start
PostgreSQL on DIR afterwards. With no target, recovery replays every archived WAL file on the
primary's timeline (that of the WAL segment stored last), losing nothing that was archived; with a
target it stops there and then promotes (default), pauses or shuts down. The restored copy does not
archive (archive_mode = off) and carries a marker (pgkeep-restored.json) that makes wal-push refuse
its WAL; see pgkeep promote-archive. Needs the identity file (identityFile, PGKEEP_IDENTITY).
  --archive off         (default) the copy does not archive
  --archive keep        the copy archives with the settings it came with, into this cluster
  --archive new-cluster NAME  the copy archives into cluster NAME of this repository
  --backup ID           a base backup id (default: the newest that ends before the target)
  --from REPO           read the backup and the WAL from a target named in the config, or a
                        repository URL (default: repository); what the pipeline pruned from ingest
                        is still at the targets
  --overwrite           delete the contents of a non-empty DIR (and tablespace directories) first
  --tablespace-map OID=DIR  put tablespace OID in DIR instead of its original location
  --owner USER          give the files to USER; as root the default is the owner of DIR's parent
                        directory, or postgres when root owns that
  --target-time T       ${ACCEPTED_TARGET_TIME_FORMS}; must lie
                        before the newest archived WAL segment's storage time`,
  async run(context) {
    if (context.args.some((a) => a === '--db' || a.startsWith('--db=') || a === '--into')) {
      throw new UsageError(
        '--db and --into are for a logical restore (pgkeep restore --db NAME --into TARGET_DB); ' +
          'a physical restore (--pgdata DIR) lays down the whole cluster',
      );
    }
    const { values, positionals } = parseCommandArgs(
      context.args,
      {
        pgdata: { type: 'string' },
        backup: { type: 'string' },
        'target-time': { type: 'string' },
        'target-lsn': { type: 'string' },
        'target-xid': { type: 'string' },
        'target-name': { type: 'string' },
        'target-action': { type: 'string' },
        overwrite: { type: 'boolean', default: false },
        'tablespace-map': { type: 'string', multiple: true },
        owner: { type: 'string' },
        archive: { type: 'string', default: 'off' },
        from: { type: 'string' },
      },
      1,
    );
    if (!values.pgdata) throw new UsageError('--pgdata DIR is required');
    let targetTime: TargetTime | undefined;
    if (values['target-time'] !== undefined) {
      try {
        targetTime = parseTargetTime(values['target-time']);
      } catch (error) {
        throw new UsageError((error as Error).message);
      }
    }
    const archive = archiveChoice(values.archive, positionals[0]);
    const targets = (['time', 'lsn', 'xid', 'name'] as const).flatMap((kind) => {
      const value = kind === 'time' ? targetTime?.value : values[`target-${kind}`];
      return value === undefined ? [] : [{ kind, value } as Exclude<RecoveryTarget, { kind: 'immediate' }>];
    });
    if (targets.length > 1)
      throw new UsageError('give at most one of --target-time, --target-lsn, --target-xid, --target-name');
    const action = values['target-action'];
    if (action !== undefined && !['promote', 'pause', 'shutdown'].includes(action)) {
      throw new UsageError(`--target-action "${action}": use promote, pause or shutdown`);
    }
    if (action !== undefined && targets.length === 0) throw new UsageError('--target-action needs a target');
    const tablespaceMap: Record<number, string> = {};
    for (const entry of values['tablespace-map'] ?? []) {
      const m = /^(\d+)=(\/.*)$/.exec(entry);
      if (!m?.[1] || !m[2]) throw new UsageError(`--tablespace-map "${entry}": expected OID=/absolute/dir`);
      tablespaceMap[Number(m[1])] = m[2];
    }
    const owner = values.owner
      ? { ...userIds(values.owner), why: values.owner }
      : await defaultOwner(resolve(values.pgdata));

    const { config, storage } = await setUp(context, {
      readsWal: true,
      ...(values.from ? { from: values.from } : {}),
    });
    if (targetTime) await assertTimeInArchive(storage, config.cluster, targetTime);
    const identities = await readIdentityFile(config.identityFile);
    const script = process.argv[1];
    if (!script) throw new Error('cannot tell the path of the pgkeep program for restore_command');
    // restore_command runs in PostgreSQL's environment, not ours: carry what located the repository.
    const env: Record<string, string> = {};
    for (const name of [
      'PGKEEP_CLUSTER',
      'PGKEEP_REPOSITORY',
      'PGKEEP_IDENTITY',
      'PGKEEP_SPOOL_DIR',
      'PGKEEP_WAL_RETRY_SECONDS',
      'PGKEEP_WAL_FETCH_PREFETCH',
    ]) {
      const value = context.env[name];
      if (value) env[name] = value;
    }

    const configPath = context.configPath ?? context.env.PGKEEP_CONFIG;
    const line = {
      nodePath: process.execPath,
      bundlePath: resolve(script),
      spoolDir: config.spoolDir,
      cluster: config.cluster,
      ...(configPath ? { configPath: resolve(configPath) } : {}),
      env,
    };
    // With --from, recovery fetches its WAL from that repository too (a copy still archives into this one).
    const restoreCommand = restoreCommandLine(
      values.from
        ? { ...line, env: { ...env, PGKEEP_REPOSITORY: resolveRepository(config, values.from).url } }
        : line,
    );
    const archiveCommand =
      archive.mode === 'new-cluster'
        ? archiveCommandLine({
            ...line,
            cluster: archive.cluster,
            env: { ...env, PGKEEP_CLUSTER: archive.cluster },
          })
        : undefined;
    const { manifest, tablespaces, timeline } = await restorePhysical({
      storage,
      cluster: config.cluster,
      identities,
      pgData: resolve(values.pgdata),
      restoreCommand,
      overwrite: values.overwrite,
      tablespaceMap,
      ...(values.backup ? { backupId: values.backup } : {}),
      ...(targets[0] ? { target: targets[0] } : {}),
      ...(action ? { targetAction: action as 'promote' | 'pause' | 'shutdown' } : {}),
      ...(owner ? { owner } : {}),
      archive,
      ...(archiveCommand ? { archiveCommand } : {}),
    });
    // Prefetched files of an earlier restore into this directory may come from another history.
    const { rm } = await import('node:fs/promises');
    await rm(new WalSpool(config.spoolDir, config.cluster, values.pgdata).prefetchDir, {
      recursive: true,
      force: true,
    });
    const ts = Object.entries(tablespaces)
      .map(([oid, dir]) => ` tablespace ${oid} in ${dir};`)
      .join('');
    context.stdout.write(
      `restored base backup ${manifest.backupId} (timeline ${manifest.timeline}, ${manifest.startLsn}-${manifest.stopLsn}) ` +
        `into ${values.pgdata};${ts}${owner && !values.owner ? ` files owned by uid ${owner.uid} (${owner.why});` : ''} start PostgreSQL on it to recover ${targets[0] ? `to ${targets[0].kind} ${targets[0].value}` : 'to the end of the archive'}` +
        `${timeline === undefined ? '' : ` on timeline ${timeline}`}; ${ARCHIVE_SAYS[archive.mode]}\n`,
    );
    return ExitCode.ok;
  },
};
