/**
 * What the daily reconciliation reads of ingest's manifests, counted at ingest's storage:
 * its retention check (keysPolicyDrops) needs every backup of a cluster, and the first step plans
 * every target side by side, so each manifest is read once for all targets, with one GET (the
 * listing gives its stored time: no HEAD).
 */
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, newBackupId } from '../../../core/keys.ts';
import { serializeManifest } from '../../../core/manifest.ts';
import type { Location, LocationFactory } from '../../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../../lambdas/lib/pipeline-env.ts';
import { planStep } from '../../../lambdas/replication/plan-copies.ts';
import { localPipelineEnv } from '../../support/local-pipeline.ts';
import { type S3Server, s3rverStorage, startS3Server } from '../../support/s3-server.ts';
import { manifestOf } from '../../support/test-manifests.ts';

const CLUSTERS = ['reads-a', 'reads-b'];
const BACKUPS = 4;
const HOUR = 3_600_000;
let server: S3Server;
/** Manifest reads at ingest by method ('head', 'get'), counted as the pipeline makes them. */
const manifestReads: Record<string, number> = {};
let env: PipelineEnv;
let locations: LocationFactory;
let ingest: Location;

beforeAll(async () => {
  server = await startS3Server({ buckets: ['ingest', 'dr', 'offsite'] });
  env = localPipelineEnv(CLUSTERS, { drAws: 'dr', b2: 'offsite' });
  const storage = s3rverStorage(server.endpoint, 'ingest');
  const counted = new Proxy(storage, {
    get(object, method: string) {
      const value = Reflect.get(object, method) as unknown;
      if (typeof value !== 'function') return value;
      return (key: unknown, ...rest: unknown[]) => {
        if ((method === 'head' || method === 'get') && String(key).includes('/manifests/'))
          manifestReads[method] = (manifestReads[method] ?? 0) + 1;
        return (value as (...a: unknown[]) => unknown).call(object, key, ...rest);
      };
    },
  });
  ingest = { name: 'ingest', storage: counted };
  const buckets: Record<string, string> = { 'dr-aws': 'dr', b2: 'offsite' };
  locations = {
    ingest: async () => ingest,
    target: async (t) => ({
      name: t.name,
      storage: s3rverStorage(server.endpoint, buckets[t.name] as string),
    }),
  };
  for (const cluster of CLUSTERS)
    for (let i = 0; i < BACKUPS; i++) {
      const at = new Date(Date.now() - (BACKUPS - i) * HOUR);
      const backupId = newBackupId(at);
      const body = Buffer.from(`dump ${cluster} ${i}`);
      const dump = logicalDumpKey(cluster, 'shop', backupId);
      await ingest.storage.put(dump, Readable.from([body]));
      const manifest = manifestOf(cluster, backupId, at.toISOString(), [{ key: dump, role: 'dump', body }]);
      await ingest.storage.put(manifestKey(cluster, backupId), Readable.from([serializeManifest(manifest)]));
    }
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

describe('the reconciliation reads ingest’s manifests once for every target', () => {
  it('one GET per manifest for two targets with a policy each, and no HEAD', async () => {
    const policy = { minimumKeep: 1, keepLast: 2 };
    const reconcile = () =>
      planStep({ targets: ['dr-aws', 'b2'], execution: { reconcile: true } }, env, locations, {
        'dr-aws': policy,
        b2: policy,
      });
    // The first run copies what the targets lack (and reads manifests for the copies' checks).
    await reconcile();
    for (const method of Object.keys(manifestReads)) delete manifestReads[method];
    // The second finds everything there: what it reads of the manifests is the retention check's.
    const second = await reconcile();
    expect(JSON.stringify(second)).not.toContain('"objectsCopied":1');
    expect(manifestReads).toEqual({ get: CLUSTERS.length * BACKUPS });
  });
});
