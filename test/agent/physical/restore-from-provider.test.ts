/**
 * "Restore from a provider" as docs/physical.md describes it: the repository's objects copied, with
 * the same keys, to an S3-compatible provider (a second server, s3rver, on 127.0.0.1), the ingest
 * repository gone, and the same `pgkeep restore --pgdata` pointed at the copy with
 * PGKEEP_REPOSITORY and the provider's key. Recovery (restore_command, run by PostgreSQL) reads WAL
 * from the provider too.
 */
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage } from '../../../storage/open-storage.ts';
import { type PgCluster, startCluster, startExistingCluster } from '../../support/pg-cluster.ts';
import {
  S3RVER_CREDENTIALS,
  type S3Server,
  startS3Server,
  useS3rverCredentials,
} from '../../support/s3-server.ts';
import {
  archiveSettings,
  type Harness,
  makeHarness,
  switchAndWaitArchived,
  waitPromoted,
} from '../wal/harness.ts';

const providerKey = {
  AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
};

let h: Harness;
let provider: S3Server;
const clusters: PgCluster[] = [];

beforeAll(async () => {
  useS3rverCredentials();
  h = await makeHarness('fromprovider');
  provider = await startS3Server({ buckets: ['offsite'] });
});

afterAll(async () => {
  for (const c of clusters) await c.destroy().catch(() => {});
  await provider?.stop();
  if (h) await rm(h.dir, { recursive: true, force: true });
});

describe('restore from a provider', () => {
  it('restores a base backup and the WAL after it from the provider copy alone', async () => {
    const primary = await startCluster({ settings: archiveSettings(h) });
    clusters.push(primary);
    await primary.sql("create table t (v text); insert into t values ('before backup')");
    const backup = await h.pgkeep(['basebackup'], primary.env);
    expect(backup.stderr).toBe('');
    await primary.sql("insert into t values ('after backup')");
    await switchAndWaitArchived(primary);
    await primary.stop();

    // What replication does: every object, same key, same bytes.
    const ingest = openStorage(`file://${h.repoDir}`);
    const offsite = openStorage(provider.url('offsite'));
    let copied = 0;
    for await (const object of ingest.list('')) {
      await offsite.put(object.key, await ingest.get(object.key));
      copied++;
    }
    expect(copied).toBeGreaterThan(3);
    // Ingest is gone: only the provider can serve the restore.
    await rename(h.repoDir, `${h.repoDir}.gone`);

    const dir = join(h.dir, 'restored', 'data');
    const env = { PGKEEP_REPOSITORY: provider.url('offsite'), ...providerKey };
    const info = await h.pgkeep(['info'], env);
    expect(info.stdout).toContain(`cluster "fromprovider" in ${offsite.displayUrl}`);
    const restored = await h.pgkeep(['restore', '--pgdata', dir], env);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    const copy = await startExistingCluster(dir, {
      settings: { archive_mode: 'off' },
      serverEnv: providerKey,
    });
    clusters.push(copy);
    await waitPromoted(copy);
    expect(await copy.sql("select string_agg(v, ',' order by v) from t")).toBe('after backup,before backup');
  });
});
