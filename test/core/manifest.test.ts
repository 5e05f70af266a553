// A manifest is trusted only when its own cluster and backup id are those of the key it was read
// from and every object key is exactly what core/keys.ts builds for its role in that backup: a
// manifest a host forged to name WAL, another backup or another cluster's objects is rejected.
import { describe, expect, it } from 'vitest';
import { baseBackupKey, globalsKey, logicalDumpKey, manifestKey, walKey } from '../../core/keys.ts';
import {
  InvalidManifestError,
  type Manifest,
  manifestProblem,
  validateManifest,
} from '../../core/manifest.ts';

const ID = '20261122T021500Z-1a2b';
const OTHER_ID = '20261121T021500Z-ffff';
const object = {
  sizeBytes: 10,
  sha256: 'a'.repeat(64),
  plaintextSizeBytes: 8,
  plaintextSha256: 'b'.repeat(64),
  codec: 'zstd',
  encryption: 'age-v1',
} as const;

function logical(objects: Manifest['objects'], cluster = 'main', backupId = ID): Manifest {
  return {
    format: 'pgkeep.manifest.v1',
    backupId,
    cluster,
    kind: 'logical',
    pgVersionNum: 170004,
    systemIdentifier: '7300000000000000001',
    startTime: '2026-11-22T02:15:00.000Z',
    stopTime: '2026-11-22T02:16:00.000Z',
    objects,
    recipientFingerprints: ['0123456789abcdef'],
    agentVersion: '0.1.0',
  };
}

function base(objects: Manifest['objects']): Manifest {
  return { ...logical(objects), kind: 'base', timeline: 1, startWalFile: '000000010000000000000002' };
}

const dump = { ...object, role: 'dump', database: 'shop', key: logicalDumpKey('main', 'shop', ID) } as const;
const globals = { ...object, role: 'globals', key: globalsKey('main', ID) } as const;
const baseArchive = { ...object, role: 'base', key: baseBackupKey('main', ID, 'base') } as const;
const tablespace = {
  ...object,
  role: 'tablespace',
  tablespaceOid: 16400,
  key: baseBackupKey('main', ID, 16400),
} as const;
const KEY = manifestKey('main', ID);

describe('validateManifest', () => {
  it('accepts what the agent writes: a logical backup with dumps and globals, a base backup with a tablespace', () => {
    expect(validateManifest(logical([dump, globals]), KEY).objects).toHaveLength(2);
    expect(manifestProblem(base([baseArchive, tablespace]), KEY)).toBeUndefined();
  });

  it.each([
    [
      'a WAL object',
      { ...dump, key: walKey('main', '000000010000000000000003', 'c'.repeat(64)) },
      /not the key of that role/,
    ],
    [
      'another cluster’s dump',
      { ...dump, key: logicalDumpKey('bank', 'shop', ID) },
      /not the key of that role.*expected v1\/main\//,
    ],
    [
      'another backup’s dump',
      { ...dump, key: logicalDumpKey('main', 'shop', OTHER_ID) },
      /not the key of that role/,
    ],
    [
      'a dump filed under another database',
      { ...dump, database: 'crm' },
      /expected v1\/main\/logical\/crm\//,
    ],
    ['a manifest', { ...dump, key: manifestKey('main', OTHER_ID) }, /not the key of that role/],
    ['a base archive in a logical backup', baseArchive, /is a base archive in a logical backup/],
  ])('rejects a logical backup listing %s', (_what, bad, reason) => {
    expect(() => validateManifest(logical([globals, bad as Manifest['objects'][number]]), KEY)).toThrow(
      reason,
    );
  });

  it('rejects a manifest whose cluster or backup id is not its key’s', () => {
    expect(
      manifestProblem(logical([{ ...dump, key: logicalDumpKey('bank', 'shop', ID) }], 'bank'), KEY),
    ).toMatch(/names cluster "bank".*manifest key is v1\/bank\/manifests\//);
    expect(manifestProblem(logical([dump]), manifestKey('main', OTHER_ID))).toMatch(
      /backup 20261122T021500Z-1a2b/,
    );
  });

  it('rejects a base backup without exactly one base archive, and duplicate keys', () => {
    expect(manifestProblem(base([tablespace]), KEY)).toMatch(/lists 0 base archives, expected 1/);
    expect(manifestProblem(logical([dump, dump]), KEY)).toMatch(/listed twice/);
    expect(manifestProblem(base([baseArchive, { ...tablespace, tablespaceOid: undefined }]), KEY)).toMatch(
      /tablespace archive without its OID/,
    );
  });

  it('throws InvalidManifestError naming the key and the problem', () => {
    const error = (() => {
      try {
        validateManifest(logical([globals], 'main', OTHER_ID), KEY);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(InvalidManifestError);
    expect((error as Error).message).toMatch(
      /^manifest v1\/main\/manifests\/20261122T021500Z-1a2b\.json is rejected: /,
    );
  });
});
