import { access, constants } from 'node:fs/promises';
import { assertRecipients } from '../../core/age-stream.ts';
import { clusterPrefix } from '../../core/keys.ts';
import { probeStorage } from '../../storage/open-storage.ts';
import { ExitCode } from '../exit-codes.ts';
import { pgProgram, serverFacts } from '../postgres.ts';
import { readIdentityFile } from '../recipients.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './command.ts';
import { setUp } from './setup.ts';

type Check = { name: string; ok: boolean; detail: string };

export const check: Command = {
  summary: 'check configuration, repository and database access; changes nothing',
  usage: `pgkeep check [--json]

Checks the configuration, that a recipient is set, that the repository answers and the cluster's
prefix can be listed, that PostgreSQL accepts a connection, and that the identity file (if set) is
readable and private. Exits 0 only if every check passes. Writes nothing anywhere.`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, { json: { type: 'boolean', default: false } });
    const { config, storage, pg } = await setUp(context);
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
    if (config.identityFile) {
      await attempt('identity', async () => {
        const identities = await readIdentityFile(config.identityFile);
        return `${identities.length} identity(ies) in ${config.identityFile}`;
      });
    }
    if (values.json) {
      context.stdout.write(`${JSON.stringify(checks, null, 2)}\n`);
    } else {
      for (const c of checks) context.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.detail}\n`);
    }
    return checks.every((c) => c.ok) ? ExitCode.ok : ExitCode.failed;
  },
};
