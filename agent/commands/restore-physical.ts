import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { ExitCode } from '../exit-codes.ts';
import { type RecoveryTarget, restorePhysical } from '../physical/restore.ts';
import { readIdentityFile } from '../recipients.ts';
import { restoreCommandLine, WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';
import { setUp } from './setup.ts';

/** `pgkeep restore --pgdata DIR …`: restore routes here when --pgdata is given. */
export const restorePhysicalCommand: Command = {
  summary: 'lay down a base backup and configure point-in-time recovery',
  usage: `pgkeep restore --pgdata DIR [--backup ID] [--target-time T | --target-lsn L | --target-xid X | --target-name N]
               [--target-action promote|pause|shutdown] [--overwrite] [--tablespace-map OID=DIR…] [--owner USER]

Extracts the base backup into DIR (absent or empty unless --overwrite) and configures recovery:
recovery.signal, and a restore_command that runs pgkeep wal-fetch with this configuration. Start
PostgreSQL on DIR afterwards. With no target, recovery replays every archived WAL file on the
latest timeline, losing nothing that was archived; with a target it stops there and then
promotes (default), pauses or shuts down. Needs the identity file (identityFile, PGKEEP_IDENTITY).
  --backup ID           a base backup id (default: the newest that ends before the target)
  --overwrite           delete the contents of a non-empty DIR (and tablespace directories) first
  --tablespace-map OID=DIR  put tablespace OID in DIR instead of its original location
  --owner USER          give the files to USER (e.g. postgres when restoring as root)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
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
    });
    if (!values.pgdata) throw new UsageError('--pgdata DIR is required');
    const targets = (['time', 'lsn', 'xid', 'name'] as const).flatMap((kind) => {
      const value = values[`target-${kind}`];
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
    let owner: { uid: number; gid: number } | undefined;
    if (values.owner) {
      const id = (flag: string) =>
        Number(execFileSync('id', [flag, values.owner as string], { encoding: 'utf8' }).trim());
      owner = { uid: id('-u'), gid: id('-g') };
    }

    const { config, storage } = await setUp(context);
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
    const restoreCommand = restoreCommandLine({
      nodePath: process.execPath,
      bundlePath: resolve(script),
      spoolDir: config.spoolDir,
      cluster: config.cluster,
      ...(configPath ? { configPath: resolve(configPath) } : {}),
      env,
    });
    // Prefetched files of an earlier restore may come from another history: start clean.
    const { rm } = await import('node:fs/promises');
    await rm(new WalSpool(config.spoolDir, config.cluster).prefetchDir, { recursive: true, force: true });
    const { manifest, tablespaces } = await restorePhysical({
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
    });
    const ts = Object.entries(tablespaces)
      .map(([oid, dir]) => ` tablespace ${oid} in ${dir};`)
      .join('');
    context.stdout.write(
      `restored base backup ${manifest.backupId} (timeline ${manifest.timeline}, ${manifest.startLsn}-${manifest.stopLsn}) ` +
        `into ${values.pgdata};${ts} start PostgreSQL on it to recover ${targets[0] ? `to ${targets[0].kind} ${targets[0].value}` : 'to the end of the archive'}\n`,
    );
    return ExitCode.ok;
  },
};
