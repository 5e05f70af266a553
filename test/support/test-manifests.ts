/**
 * Manifests as the agent writes them, for pipeline tests that put backups into ingest by hand: the
 * fixed fields of a valid manifest in one place, each object's size and sha256 from its body.
 */
import { createHash } from 'node:crypto';
import type { Manifest } from '../../core/manifest.ts';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A backup object and the bytes stored for it (ciphertext as far as the pipeline knows). */
export interface TestObject {
  readonly key: string;
  readonly role: 'dump' | 'base';
  readonly body: Buffer;
}

/**
 * The manifest of a logical backup of database "shop" (dump objects), or of a base backup when
 * `base` names its WAL range; PostgreSQL 17.4 unless `pgVersionNum` says otherwise.
 */
export function manifestOf(
  cluster: string,
  backupId: string,
  stopTime: string,
  objects: readonly TestObject[],
  base?: { startWalFile: string; stopWalFile: string },
  pgVersionNum = 170004,
): Manifest {
  return {
    format: 'pgkeep.manifest.v1',
    backupId,
    cluster,
    kind: base ? 'base' : 'logical',
    pgVersionNum,
    systemIdentifier: '7300000000000000001',
    startTime: stopTime,
    stopTime,
    ...(base ? { timeline: 1, ...base } : {}),
    objects: objects.map((o) => ({
      key: o.key,
      role: o.role,
      ...(o.role === 'dump' ? { database: 'shop' } : {}),
      sizeBytes: o.body.length,
      sha256: sha256(o.body),
      plaintextSizeBytes: o.body.length,
      plaintextSha256: sha256(o.body),
      codec: 'zstd',
      encryption: 'age-v1',
    })),
    recipientFingerprints: ['0123456789abcdef'],
    agentVersion: '0.1.0',
  };
}
