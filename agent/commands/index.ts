import type { Command } from './command.ts';

/**
 * Every command of the CLI, by name, in the order `pgkeep help` lists them. Each is loaded only when
 * it runs: PostgreSQL starts `pgkeep wal-push` once per WAL segment, so evaluating the AWS SDK,
 * zod and the post-quantum code for commands that do not need them costs real time per segment.
 */
export const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  keygen: async () => (await import('./keygen.ts')).keygen,
  backup: async () => (await import('./backup.ts')).backup,
  list: async () => (await import('./list.ts')).list,
  info: async () => (await import('./info.ts')).info,
  restore: async () => (await import('./restore.ts')).restore,
  check: async () => (await import('./check.ts')).check,
  verify: async () => (await import('./verify.ts')).verify,
  basebackup: async () => (await import('./basebackup.ts')).basebackup,
  'wal-push': async () => (await import('./wal-push.ts')).walPush,
  'wal-pusher': async () => (await import('./wal-pusher.ts')).walPusher,
  'wal-fetch': async () => (await import('./wal-fetch.ts')).walFetch,
  'wal-prefetch': async () => (await import('./wal-fetch.ts')).walPrefetch,
  agent: async () => (await import('./agent.ts')).agent,
  stream: async () => (await import('./stream.ts')).stream,
  'systemd-unit': async () => (await import('./systemd-unit.ts')).systemdUnit,
  decrypt: async () => (await import('./decrypt.ts')).decrypt,
  'promote-archive': async () => (await import('./promote-archive.ts')).promoteArchive,
  pipeline: async () => (await import('./pipeline.ts')).pipeline,
};
