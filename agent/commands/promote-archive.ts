/**
 * `pgkeep promote-archive`: adopts a restored data directory as the cluster's primary after a
 * real failover, the one way to lift the restore marker (physical/restored-marker.ts) that makes
 * wal-push refuse a restored copy's WAL.
 */
import { access, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseWalFileName } from '../../core/wal-names.ts';
import { requireRecipients } from '../config.ts';
import { ExitCode } from '../exit-codes.ts';
import { repositoryPrimaryTimeline } from '../physical/restore.ts';
import { readRestoredMarker, removeRestoredMarker, restoredMarkerPath } from '../physical/restored-marker.ts';
import { pushWalFile } from '../wal/push.ts';
import { WalSpool } from '../wal/spool.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';
import { setUp } from './setup.ts';
import { walPushSettings } from './wal-options.ts';

/** The newest timeline history file in pg_wal: the timeline the server runs on, if it ever forked. */
async function newestHistory(pgWalDir: string): Promise<{ name: string; timeline: number } | undefined> {
  let best: { name: string; timeline: number } | undefined;
  for (const name of await readdir(pgWalDir).catch(() => [] as string[])) {
    const wal = parseWalFileName(name);
    if (wal?.kind === 'history' && (!best || wal.timeline > best.timeline))
      best = { name, timeline: wal.timeline };
  }
  return best;
}

export const promoteArchive: Command = {
  summary: 'let a restored data directory archive as the new primary (after a real failover)',
  usage: `pgkeep promote-archive [--pgdata DIR]

A data directory laid down by \`pgkeep restore --pgdata\` carries a marker (pgkeep-restored.json)
that makes wal-push refuse its WAL, so a test copy never writes into the archive it came from. When
the copy really is the new primary, run this after promoting it: it stores the history file of the
timeline the server now runs on (the fork becomes part of the archive at once, and from the first
segment the new primary archives, "restore to latest" follows it), then removes the marker.
  --pgdata DIR   the data directory (default: $PGDATA)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, { pgdata: { type: 'string' } });
    const given = values.pgdata ?? context.env.PGDATA;
    if (!given) throw new UsageError('--pgdata DIR is required (or set PGDATA): the restored data directory');
    const dataDir = resolve(given);
    const marker = await readRestoredMarker(dataDir);
    if (marker === undefined) {
      context.stdout.write(
        `${dataDir} carries no restore marker (${restoredMarkerPath(dataDir)}): it archives already\n`,
      );
      return ExitCode.ok;
    }
    for (const signal of ['recovery.signal', 'standby.signal']) {
      const present = await access(join(dataDir, signal)).then(
        () => true,
        () => false,
      );
      if (present) {
        throw new UsageError(
          `${dataDir} is still in recovery (${signal} is there): promote the server first ` +
            `(pg_ctl promote -D ${dataDir}), then run pgkeep promote-archive again`,
        );
      }
    }
    const { config, storage } = await setUp(context);
    const recipients = requireRecipients(config);
    const primary = await repositoryPrimaryTimeline(storage, config.cluster);
    const history = await newestHistory(join(dataDir, 'pg_wal'));
    let said = `${dataDir} now archives into cluster "${config.cluster}" of ${storage.displayUrl}`;
    if (history) {
      const spool = new WalSpool(config.spoolDir, config.cluster, dataDir);
      await pushWalFile({
        ...walPushSettings(config, storage, recipients, spool, join(dataDir, 'pg_wal')),
        path: join(dataDir, 'pg_wal', history.name),
      });
      said +=
        `; it runs on timeline ${history.timeline} (${history.name} stored), which the archive's newest ` +
        `segments were not on (timeline ${primary ?? 'none yet'}): restores to latest follow timeline ` +
        `${history.timeline} from its first archived segment on`;
    }
    await removeRestoredMarker(dataDir);
    context.stdout.write(`${said}\n`);
    return ExitCode.ok;
  },
};
