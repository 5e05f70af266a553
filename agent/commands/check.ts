import { access, constants } from 'node:fs/promises';
import { assertRecipients } from '../../core/age-stream.ts';
import { clusterPrefix } from '../../core/keys.ts';
import { probeStorage } from '../../storage/open-storage.ts';
import { ExitCode } from '../exit-codes.ts';
import { pgProgram, serverFacts } from '../postgres.ts';
import { readIdentityFile } from '../recipients.ts';
import { parseCommandArgs } from './args.ts';
import {
  checkArchiveGaps,
  checkArchivePush,
  checkArchiving,
  checkIdentityMatches,
  checkReplication,
  checkSpool,
} from './check-probes.ts';
import { type Command, UsageError } from './command.ts';
import { setUp } from './setup.ts';

type Check = { name: string; ok: boolean; detail: string };

export const check: Command = {
  summary: 'check configuration, repository and database access; changes nothing',
  usage: `pgkeep check [--json] [--archive [--archive-wait-seconds N]]

Checks the configuration, that a recipient is set, that the repository answers and the cluster's
prefix can be listed, that PostgreSQL accepts a connection, that archive_mode is on and
archive_command runs pgkeep wal-push for this cluster (archive_mode off is reported, and fails only
with --archive or schedules.base), and when archiving: that the user archive_command runs as can
write the spool and that a replication connection (pg_basebackup) works; and that the identity
file (if set) is private and decrypts what the recipients encrypt. Exits 0 only if every check passes.
Writes nothing, except with --archive.
  --archive                 also switch WAL (pg_switch_wal) and wait for the segment in the repository,
                            then walk the archive: every gap in the WAL between the oldest base backup
                            and the newest segment, per timeline, fails the check, naming the segments
  --archive-wait-seconds N  how long to wait for it (default 60)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      json: { type: 'boolean', default: false },
      archive: { type: 'boolean', default: false },
      'archive-wait-seconds': { type: 'string', default: '60' },
    });
    const waitSeconds = Number(values['archive-wait-seconds']);
    if (!Number.isFinite(waitSeconds) || waitSeconds <= 0) {
      throw new UsageError(
        `--archive-wait-seconds "${values['archive-wait-seconds']}": give a number of seconds above 0`,
      );
    }
    const { config, storage, pg } = await setUp(context, { readsWal: true });
    const checks: Check[] = [];
    const attempt = async (name: string, fn: () => Promise<string>) => {
      try {
        checks.push({ name, ok: true, detail: await fn() });
      } catch (error) {
        checks.push({ name, ok: false, detail: (error as Error).message });
      }
    };
    await attempt('recipients', async () => {
      assertRecipients(config.recipients);
      return `${config.recipients.length} recipient(s)`;
    });
    await attempt('repository', async () => {
      await probeStorage(storage, clusterPrefix(config.cluster));
      return storage.displayUrl;
    });
    await attempt('postgresql', async () => {
      const facts = await serverFacts(pg);
      return `server ${facts.versionNum}, system identifier ${facts.systemIdentifier}`;
    });
    await attempt('pg_dump', async () => {
      if (config.pgBin) await access(pgProgram(pg, 'pg_dump'), constants.X_OK);
      return pgProgram(pg, 'pg_dump');
    });
    // Physical backups are expected when asked to prove archiving or when base backups are scheduled.
    let archiving = values.archive || config.schedules.base !== undefined;
    await attempt('archiving', async () => {
      const result = await checkArchiving(pg, storage, config.cluster, archiving);
      archiving ||= result.archiving;
      return result.detail;
    });
    if (values.archive) {
      await attempt('archive push', () => checkArchivePush(pg, storage, config.cluster, waitSeconds));
      try {
        checks.push(...(await checkArchiveGaps(storage, config.cluster)));
      } catch (error) {
        checks.push({ name: 'archive gaps', ok: false, detail: (error as Error).message });
      }
    }
    if (archiving) {
      await attempt('spool', () => checkSpool(pg, config.spoolDir, config.cluster));
      await attempt('replication', () => checkReplication(pg));
    }
    if (config.identityFile) {
      await attempt('identity', async () => {
        const identities = await readIdentityFile(config.identityFile);
        return `${identities.length} identity(ies) in ${config.identityFile}`;
      });
      await attempt('identity matches a recipient', async () =>
        checkIdentityMatches(config.recipients, await readIdentityFile(config.identityFile)),
      );
    }
    if (values.json) {
      context.stdout.write(`${JSON.stringify(checks, null, 2)}\n`);
    } else {
      for (const c of checks) context.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.detail}\n`);
    }
    return checks.every((c) => c.ok) ? ExitCode.ok : ExitCode.failed;
  },
};
