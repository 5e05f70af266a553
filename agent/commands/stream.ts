import { resolve } from 'node:path';
import { isStreamName, STREAM_NAME_RULE } from '../../core/keys.ts';
import type { Manifest } from '../../core/manifest.ts';
import { requireRecipients } from '../config.ts';
import { ExitCode, type ExitCodeValue } from '../exit-codes.ts';
import { readIdentityFile } from '../recipients.ts';
import { shellQuote } from '../shell.ts';
import {
  listStreamBackups,
  runStreamBackup,
  runStreamRestore,
  type StreamCommand,
} from '../stream/stream-backup.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, type CommandContext, UsageError } from './command.ts';
import { formatBytes, progressLine, setUp } from './setup.ts';

const USAGE = `pgkeep stream backup --name NAME [--json] -- COMMAND [ARGS…]
pgkeep stream restore --name NAME [--backup ID|latest] -- COMMAND [ARGS…]
pgkeep stream snapshots --name NAME [--json]
pgkeep stream restore-script --name NAME [--pgkeep PATH] -- COMMAND [ARGS…]

Backs up any command's output. backup runs COMMAND and streams its stdout, compressed and
encrypted, into the repository, then writes the manifest; if COMMAND exits non-zero nothing is
kept. restore streams a backup's plaintext, checked as it goes, into COMMAND's stdin and succeeds
only when every byte checked out and COMMAND exited 0 (needs the identity file). snapshots lists
the backups taken under NAME, oldest first. restore-script prints a shell program with the
interface of a restore script: "snapshots", and "restore latest|ID" into COMMAND.
  --name NAME    ${STREAM_NAME_RULE}
  --backup ID    a backup id from snapshots, or latest (the default)
  --pgkeep PATH  the pgkeep program the script runs (default: this one)
  --json         backup: print the manifest; snapshots: a JSON array`;

/** Splits `… -- COMMAND ARGS…` into the options before `--` and the command after it. */
function splitCommand(args: string[], need: boolean): { options: string[]; command?: StreamCommand } {
  const at = args.indexOf('--');
  if (at < 0) {
    if (need) throw new UsageError('give the command after --, e.g. -- pg_dumpall');
    return { options: args };
  }
  const [program, ...rest] = args.slice(at + 1);
  if (!program) throw new UsageError('no command after --');
  return { options: args.slice(0, at), command: { program, args: rest } };
}

function streamName(value: string | undefined): string {
  if (value === undefined) throw new UsageError('--name NAME is required');
  if (!isStreamName(value)) throw new UsageError(`--name "${value}": ${STREAM_NAME_RULE}`);
  return value;
}

function snapshotRows(manifests: readonly Manifest[]) {
  return manifests.map((m) => ({
    backupId: m.backupId,
    startTime: m.startTime,
    stopTime: m.stopTime,
    sizeBytes: m.objects.reduce((sum, o) => sum + o.sizeBytes, 0),
    plaintextSizeBytes: m.objects.reduce((sum, o) => sum + o.plaintextSizeBytes, 0),
  }));
}

async function backup(context: CommandContext, args: string[]): Promise<ExitCodeValue> {
  const { options, command } = splitCommand(args, true);
  const { values } = parseCommandArgs(options, {
    name: { type: 'string' },
    json: { type: 'boolean', default: false },
  });
  const name = streamName(values.name);
  const { config, storage } = await setUp(context);
  const recipients = requireRecipients(config);
  const progress = progressLine(context);
  const manifest = await runStreamBackup({
    storage,
    cluster: config.cluster,
    name,
    recipients,
    command: { ...(command as StreamCommand), env: context.env },
    zstdLevel: config.zstdLevel,
    onProgress: (bytes) => progress.update(`${name}: ${formatBytes(bytes)}`),
  });
  progress.done();
  const [row] = snapshotRows([manifest]);
  if (values.json) context.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
  else
    context.stdout.write(
      `stream backup ${manifest.backupId} of "${name}": ${formatBytes(row?.plaintextSizeBytes ?? 0)} read, ${formatBytes(row?.sizeBytes ?? 0)} stored\n`,
    );
  return ExitCode.ok;
}

async function restore(context: CommandContext, args: string[]): Promise<ExitCodeValue> {
  const { options, command } = splitCommand(args, true);
  const { values } = parseCommandArgs(options, {
    name: { type: 'string' },
    backup: { type: 'string', default: 'latest' },
  });
  const name = streamName(values.name);
  const { config, storage } = await setUp(context);
  const identities = await readIdentityFile(config.identityFile);
  const manifest = await runStreamRestore({
    storage,
    cluster: config.cluster,
    name,
    backup: values.backup,
    identities,
    command: { ...(command as StreamCommand), env: context.env },
  });
  context.stderr.write(`restored stream backup ${manifest.backupId} of "${name}"\n`);
  return ExitCode.ok;
}

async function snapshots(context: CommandContext, args: string[]): Promise<ExitCodeValue> {
  const { values } = parseCommandArgs(args, {
    name: { type: 'string' },
    json: { type: 'boolean', default: false },
  });
  const name = streamName(values.name);
  const { config, storage } = await setUp(context);
  const rows = snapshotRows(await listStreamBackups(storage, config.cluster, name));
  if (values.json) context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else if (rows.length === 0) context.stdout.write(`no stream backups named "${name}"\n`);
  else
    for (const row of rows)
      context.stdout.write(`${row.backupId}  ${row.stopTime}  ${formatBytes(row.plaintextSizeBytes)}\n`);
  return ExitCode.ok;
}

async function restoreScript(context: CommandContext, args: string[]): Promise<ExitCodeValue> {
  const { options, command } = splitCommand(args, true);
  const { values } = parseCommandArgs(options, { name: { type: 'string' }, pgkeep: { type: 'string' } });
  const name = streamName(values.name);
  const self = process.argv[1];
  const pgkeep = values.pgkeep
    ? shellQuote(values.pgkeep)
    : `${shellQuote(process.execPath)} ${shellQuote(resolve(self ?? 'pgkeep'))}`;
  const config = context.configPath ? ` --config ${shellQuote(resolve(context.configPath))}` : '';
  const run = `${pgkeep}${config} stream`;
  const into = [command?.program ?? '', ...(command?.args ?? [])].map(shellQuote).join(' ');
  context.stdout.write(`#!/bin/sh
# Restore script for the stream backups named ${name} (pgkeep stream restore-script):
#   snapshots              list the backups, oldest first
#   restore latest|ID      stream one into: ${into.replaceAll('\n', ' ')}
set -eu
case "\${1:-}" in
  snapshots) [ $# -eq 1 ] || { echo "usage: $0 snapshots" >&2; exit 2; }
    exec ${run} snapshots --name ${shellQuote(name)} ;;
  restore) [ $# -eq 2 ] || { echo "usage: $0 restore latest|ID" >&2; exit 2; }
    exec ${run} restore --name ${shellQuote(name)} --backup "$2" -- ${into} ;;
  *) echo "usage: $0 snapshots | restore latest|ID" >&2; exit 2 ;;
esac
`);
  return ExitCode.ok;
}

const SUBCOMMANDS: Record<string, (context: CommandContext, args: string[]) => Promise<ExitCodeValue>> = {
  backup,
  restore,
  snapshots,
  'restore-script': restoreScript,
};

export const stream: Command = {
  summary: "back up any command's output, and restore it into any command",
  usage: USAGE,
  async run(context) {
    const [sub, ...args] = context.args;
    const run = sub === undefined ? undefined : SUBCOMMANDS[sub];
    if (!run)
      throw new UsageError(
        sub === undefined
          ? 'name a subcommand: backup, restore, snapshots or restore-script'
          : `unknown subcommand "${sub}"; known: ${Object.keys(SUBCOMMANDS).join(', ')}`,
      );
    return run(context, args);
  },
};
