// The one manifest reader: what it returns is validated and carries the repository's own time;
// a manifest that is not JSON, fails the schema or names keys outside its backup is sorted out
// with the reason, so one forged manifest neither stops a run nor gets acted on.
import { mkdir, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey } from '../../core/keys.ts';
import { InvalidManifestError, type Manifest, serializeManifest } from '../../core/manifest.ts';
import { FileStorage } from '../../storage/file-storage.ts';
import { listManifests, readManifest } from '../../storage/manifests.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'pgkeep-manifests-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const GOOD = '20261122T021500Z-1a2b';
const FORGED = '20261123T021500Z-ffff';
const BROKEN = '20261124T021500Z-0000';

function manifest(backupId: string, dumpKey: string): Manifest {
  return {
    format: 'pgkeep.manifest.v1',
    backupId,
    cluster: 'main',
    kind: 'logical',
    pgVersionNum: 170004,
    systemIdentifier: '7300000000000000001',
    startTime: '2030-01-01T00:00:00.000Z',
    stopTime: '2030-01-01T00:00:00.000Z',
    objects: [
      {
        key: dumpKey,
        role: 'dump',
        database: 'shop',
        sizeBytes: 1,
        sha256: 'a'.repeat(64),
        plaintextSizeBytes: 1,
        plaintextSha256: 'a'.repeat(64),
        codec: 'zstd',
        encryption: 'age-v1',
      },
    ],
    recipientFingerprints: ['0123456789abcdef'],
    agentVersion: '0.1.0',
  };
}

describe('listManifests and readManifest', () => {
  it('return validated manifests with the time the repository stored them, and sort out the rest with why', async () => {
    const root = path.join(scratch, 'repo');
    await mkdir(root);
    const storage = new FileStorage(root);
    const put = (key: string, body: string) => storage.put(key, Readable.from([body]));
    await put(
      manifestKey('main', GOOD),
      serializeManifest(manifest(GOOD, logicalDumpKey('main', 'shop', GOOD))),
    );
    await put(
      manifestKey('main', FORGED),
      serializeManifest(manifest(FORGED, logicalDumpKey('bank', 'shop', FORGED))),
    );
    await put(manifestKey('main', BROKEN), '{"format": ');
    const stored = new Date('2026-11-22T02:16:00Z');
    await utimes(path.join(root, manifestKey('main', GOOD)), stored, stored);

    const { manifests, rejected } = await listManifests(storage, 'main');
    expect(manifests.map((m) => [m.key, m.manifest.backupId, m.storedAt.toISOString()])).toEqual([
      [manifestKey('main', GOOD), GOOD, stored.toISOString()],
    ]);
    expect(rejected).toEqual([
      {
        key: manifestKey('main', FORGED),
        reason: expect.stringMatching(/rejected: object v1\/bank\/.* not the key/),
      },
      { key: manifestKey('main', BROKEN), reason: expect.stringMatching(/is not valid JSON/) },
    ]);
    await expect(readManifest(storage, manifestKey('main', FORGED))).rejects.toBeInstanceOf(
      InvalidManifestError,
    );
  });
});
