/**
 * Point-in-time recovery from a replication target whose WAL is in bundles (core/wal-bundle.ts),
 * as after losing ingest: the repository's objects are at an S3-compatible provider (s3rver on
 * 127.0.0.1), backups one object each and WAL segments in bundles written by replication's own
 * bundle writer, and `pgkeep restore` plus PostgreSQL's restore_command (`pgkeep wal-fetch`) read
 * them through the bundle reader. A bundle changed at the provider fails recovery, naming it.
 */
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseWalKey } from '../../../core/keys.ts';
import { isBundleableWalKey } from '../../../core/wal-bundle.ts';
import type { Location } from '../../../lambdas/lib/locations.ts';
import { writeWalBundle } from '../../../lambdas/replication/wal-bundle-copy.ts';
import { openStorage } from '../../../storage/open-storage.ts';
import type { ObjectInfo } from '../../../storage/storage.ts';
import { WalBundleStorage } from '../../../storage/wal-bundles.ts';
import { type PgCluster, startCluster, startExistingCluster } from '../../support/pg-cluster.ts';
import {
  S3RVER_CREDENTIALS,
  type S3Server,
  s3rverStorage,
  startS3Server,
  useS3rverCredentials,
} from '../../support/s3-server.ts';
import { archiveSettings, type Harness, makeHarness, switchAndWaitArchived } from '../wal/harness.ts';

const providerKey = {
  AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
};
/** Segments per bundle: small, so the restore crosses several bundles. */
const PER_BUNDLE = 3;

let h: Harness;
let provider: S3Server;
const clusters: PgCluster[] = [];
let timeT = '';
let startWalFile = '';
const bundleKeys: string[] = [];

beforeAll(async () => {
  useS3rverCredentials();
  h = await makeHarness('bundled');
  provider = await startS3Server({ buckets: ['ingest', 'offsite', 'tampered'] });
});

afterAll(async () => {
  for (const c of clusters) await c.destroy().catch(() => {});
  await provider?.stop();
  if (h) await rm(h.dir, { recursive: true, force: true });
});

/** What replication does at a target with WAL bundles: segments in bundles, the rest one object each. */
async function replicate(bucket: string): Promise<void> {
  // The agent wrote to a file:// repository; ingest is S3 in production, and the writer reads it
  // with S3 requests: the objects go to an s3rver ingest first (once).
  const repository = openStorage(`file://${h.repoDir}`);
  const ingestStorage = s3rverStorage(provider.endpoint, 'ingest');
  for await (const object of repository.list(''))
    if (!(await ingestStorage.head(object.key)))
      await ingestStorage.put(object.key, await repository.get(object.key));
  const target = s3rverStorage(provider.endpoint, bucket);
  const ingest = { name: 'ingest', storage: ingestStorage } as Location;
  const offsite = { name: bucket, storage: target } as Location;
  const segments: ObjectInfo[] = [];
  for await (const object of ingestStorage.list('')) {
    if (isBundleableWalKey(object.key)) segments.push(object);
    else await target.put(object.key, await ingestStorage.get(object.key));
  }
  for (let i = 0; i < segments.length; i += PER_BUNDLE) {
    const chunk = segments.slice(i, i + PER_BUNDLE);
    const written = await writeWalBundle(
      ingest,
      offsite,
      new WalBundleStorage(target),
      'bundled',
      chunk.map((object) => ({ object, expected: { sizeBytes: object.sizeBytes } })),
    );
    if (bucket === 'offsite') bundleKeys.push(written.key);
  }
}

describe('restore from a target whose WAL is in bundles', () => {
  it('restores a base backup and replays bundled WAL to a point in time, with ingest gone', async () => {
    const primary = await startCluster({ settings: archiveSettings(h) });
    clusters.push(primary);
    await primary.sql("create table t (v text); insert into t values ('before backup')");
    const backup = await h.pgkeep(['basebackup', '--json'], primary.env);
    expect(backup.stderr).toBe('');
    startWalFile = JSON.parse(backup.stdout).startWalFile;
    for (const v of ['a', 'b', 'c']) {
      await primary.sql(`insert into t values ('before T ${v}')`);
      await switchAndWaitArchived(primary);
    }
    timeT = await primary.sql('select clock_timestamp()');
    await new Promise((r) => setTimeout(r, 500));
    for (const v of ['d', 'e']) {
      await primary.sql(`insert into t values ('after T ${v}')`);
      await switchAndWaitArchived(primary);
    }
    await primary.stop();
    await replicate('offsite');
    await replicate('tampered');
    expect(bundleKeys.length).toBeGreaterThan(1);
    // Ingest is gone: only the provider's bundles can serve the WAL.
    await rename(h.repoDir, `${h.repoDir}.gone`);

    const dir = join(h.dir, 'restored', 'data');
    const env = { PGKEEP_REPOSITORY: provider.url('offsite'), ...providerKey };
    const check = await h.pgkeep(['check', '--archive'], env);
    // `check --archive` walks the WAL from the base backup on: every bundled segment is found.
    expect(check.stdout).toMatch(
      /ok +archive gaps, timeline 1: no gap in 00000001[0-9A-F]{16} to 00000001[0-9A-F]{16}/,
    );
    const restored = await h.pgkeep(['restore', '--pgdata', dir, '--target-time', timeT], env);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    const copy = await startExistingCluster(dir, { settings: { archive_mode: 'off' }, serverEnv: env });
    clusters.push(copy);
    expect(await copy.sql("select string_agg(v, ',' order by v) from t")).toBe(
      'before T a,before T b,before T c,before backup',
    );
    await copy.stop();
  }, 240_000);

  it('fails recovery with an error naming the bundle when its bytes were changed at the provider', async () => {
    // Flip one byte in the member that holds the base backup's first segment: recovery needs it first.
    const tampered = s3rverStorage(provider.endpoint, 'tampered');
    const reader = new WalBundleStorage(tampered);
    let target: { bundle: string; offset: number } | undefined;
    for await (const object of reader.list('v1/bundled/wal/'))
      if (parseWalKey(object.key)?.walFileName === startWalFile) {
        const member = await reader.findMember(object.key);
        if (member) target = { bundle: member.bundle, offset: member.offset };
      }
    expect(target).toBeDefined();
    const { bundle, offset } = target as { bundle: string; offset: number };
    const file = join(provider.directory, 'tampered', `${bundle}._S3rver_object`);
    const bytes = await readFile(file).catch(() => undefined);
    expect(bytes, `s3rver stores ${bundle} at ${file}`).toBeDefined();
    (bytes as Buffer)[offset + 200] = ((bytes as Buffer)[offset + 200] as number) ^ 0xff;
    await import('node:fs/promises').then((fs) => fs.writeFile(file, bytes as Buffer));

    const dir = join(h.dir, 'restored-tampered', 'data');
    const env = { PGKEEP_REPOSITORY: provider.url('tampered'), ...providerKey };
    const restored = await h.pgkeep(['restore', '--pgdata', dir, '--target-time', timeT], env);
    expect(restored.code).toBe(0);
    const started = await startExistingCluster(dir, {
      settings: { archive_mode: 'off' },
      serverEnv: env,
    }).catch((error: unknown) => error as Error);
    if (!(started instanceof Error)) clusters.push(started);
    expect(started).toBeInstanceOf(Error);
    expect((started as Error).message).toMatch(
      new RegExp(
        `WAL bundle ${bundle.replaceAll('.', '\\.')} .*changed at the target; restore from another target`,
      ),
    );
  }, 240_000);
});
