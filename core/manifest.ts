/**
 * The backup manifest: plaintext JSON, no secrets and no data, written last so that its presence
 * means the backup exists. Replication and retention read it without any key.
 */
import { z } from 'zod';
import {
  baseBackupKey,
  globalsKey,
  isBackupId,
  isStreamName,
  logicalDumpKey,
  manifestKey,
  STREAM_NAME_RULE,
  streamObjectKey,
} from './keys.ts';

export const MANIFEST_FORMAT = 'pgkeep.manifest.v1';

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits');
const lsn = z.string().regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/, 'expected an LSN such as 0/3000028');

export const ManifestObjectSchema = z.strictObject({
  key: z.string().min(1),
  /** What the object holds. */
  role: z.enum(['dump', 'globals', 'base', 'tablespace', 'stream']),
  /** The database of a `dump`. */
  database: z.string().optional(),
  /** The tablespace OID of a `tablespace` archive. */
  tablespaceOid: z.number().int().positive().optional(),
  /** Size and sha256 of the stored (compressed, encrypted) bytes. */
  sizeBytes: z.number().int().nonnegative(),
  sha256: sha256Hex,
  plaintextSizeBytes: z.number().int().nonnegative(),
  /** Only in manifests of older agents: stream objects are no longer hashed in plaintext (object-store.ts says why). */
  plaintextSha256: sha256Hex.optional(),
  codec: z.literal('zstd'),
  encryption: z.literal('age-v1'),
});

export const ManifestSchema = z
  .strictObject({
    format: z.literal(MANIFEST_FORMAT),
    backupId: z.string().refine(isBackupId, 'expected a backup id such as 20261122T021500Z-1a2b'),
    cluster: z.string().min(1),
    /** `stream`: the stdout of any command (`pgkeep stream backup`), not PostgreSQL's own format. */
    kind: z.enum(['logical', 'base', 'stream']),
    /** The name a `stream` backup was taken under (`--name`). */
    streamName: z.string().refine(isStreamName, STREAM_NAME_RULE).optional(),
    /** server_version_num, e.g. 150018. Required for `logical` and `base`. */
    pgVersionNum: z.number().int().positive().optional(),
    /** pg_control's database system identifier, a 64-bit integer as a decimal string. Required for `logical` and `base`. */
    systemIdentifier: z.string().regex(/^\d+$/).optional(),
    startTime: z.iso.datetime(),
    stopTime: z.iso.datetime(),
    /** Physical backups: the timeline and WAL range a restore needs. */
    timeline: z.number().int().positive().optional(),
    startLsn: lsn.optional(),
    stopLsn: lsn.optional(),
    /** First and last WAL file needed to make the base backup consistent. */
    startWalFile: z.string().optional(),
    stopWalFile: z.string().optional(),
    objects: z.array(ManifestObjectSchema).min(1),
    /** sha256 prefixes of the recipients the objects were encrypted to (never the recipients' secrets). */
    recipientFingerprints: z.array(z.string()).min(1),
    agentVersion: z.string(),
  })
  .superRefine((manifest, context) => {
    const need = (field: string) =>
      context.addIssue({ code: 'custom', path: [field], message: `required for a ${manifest.kind} backup` });
    if (manifest.kind === 'stream') {
      if (manifest.streamName === undefined) need('streamName');
    } else {
      if (manifest.pgVersionNum === undefined) need('pgVersionNum');
      if (manifest.systemIdentifier === undefined) need('systemIdentifier');
      if (manifest.streamName !== undefined)
        context.addIssue({
          code: 'custom',
          path: ['streamName'],
          message: 'only a stream backup has a name',
        });
    }
  });

export type Manifest = z.infer<typeof ManifestSchema>;
export type ManifestObject = z.infer<typeof ManifestObjectSchema>;

export class InvalidManifestError extends Error {
  override name = 'InvalidManifestError';
}

/** Parses and validates a manifest; the error names the first offending field. */
export function parseManifest(json: string, source: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (cause) {
    throw new InvalidManifestError(`manifest ${source} is not valid JSON`, { cause });
  }
  const result = ManifestSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue?.path.join('.') || '(root)';
    throw new InvalidManifestError(`manifest ${source} is invalid at ${path}: ${issue?.message}`);
  }
  return result.data;
}

/**
 * Oldest first. Backup ids have second precision, so two backups of the same second are ordered
 * by their recorded start and stop times (millisecond precision), and only then by id.
 */
export function compareManifests(a: Manifest, b: Manifest): number {
  const byTime =
    Date.parse(a.startTime) - Date.parse(b.startTime) || Date.parse(a.stopTime) - Date.parse(b.stopTime);
  return byTime !== 0 ? byTime : a.backupId.localeCompare(b.backupId);
}

declare const validated: unique symbol;

/**
 * A manifest whose every key was checked against where it was read from ({@link validateManifest}).
 * Only that function makes one: anything that acts on a manifest (retention deletes, replication
 * copies, restores) takes this type, so data a host wrote cannot reach it unchecked.
 */
export type ValidatedManifest = Manifest & { readonly [validated]: true };

/** The key each object of `role` must have in backup `backupId` of `cluster`, as core/keys.ts builds it. */
function expectedObjectKey(manifest: Manifest, object: ManifestObject): string | string[] {
  const { cluster, backupId, kind } = manifest;
  switch (object.role) {
    case 'dump':
      if (kind !== 'logical') return 'a dump in a base backup';
      if (object.database === undefined) return 'a dump without a database';
      return [logicalDumpKey(cluster, object.database, backupId)];
    case 'globals':
      if (kind !== 'logical') return 'globals in a base backup';
      return [globalsKey(cluster, backupId)];
    case 'base':
      if (kind !== 'base') return 'a base archive in a logical backup';
      return [baseBackupKey(cluster, backupId, 'base')];
    case 'tablespace':
      if (kind !== 'base') return 'a tablespace archive in a logical backup';
      if (object.tablespaceOid === undefined) return 'a tablespace archive without its OID';
      return [baseBackupKey(cluster, backupId, object.tablespaceOid)];
    case 'stream':
      if (kind !== 'stream' || manifest.streamName === undefined) return `a stream in a ${kind} backup`;
      return [streamObjectKey(cluster, manifest.streamName, backupId)];
  }
}

/**
 * Why `manifest`, read at `key`, cannot be trusted, or undefined when it can: the manifest's own
 * cluster and backup id must be those of its key, and every object key must be exactly what
 * core/keys.ts builds for its role in that backup (so no WAL, no other backup, no other cluster).
 */
export function manifestProblem(manifest: Manifest, key: string): string | undefined {
  let ownKey: string;
  try {
    ownKey = manifestKey(manifest.cluster, manifest.backupId);
  } catch (error) {
    return (error as Error).message;
  }
  if (ownKey !== key)
    return `it names cluster "${manifest.cluster}" and backup ${manifest.backupId}, whose manifest key is ${ownKey}`;
  const seen = new Set<string>();
  let bases = 0;
  for (const object of manifest.objects) {
    const expected = expectedObjectKey(manifest, object);
    if (typeof expected === 'string') return `object ${object.key} is ${expected}`;
    if (!expected.includes(object.key))
      return `object ${object.key} (role ${object.role}) is not the key of that role in backup ${manifest.backupId} of cluster "${manifest.cluster}": expected ${expected.join(' or ')}`;
    if (seen.has(object.key)) return `object ${object.key} is listed twice`;
    seen.add(object.key);
    if (object.role === 'base') bases += 1;
  }
  if (manifest.kind === 'base' && bases !== 1)
    return `a base backup lists ${bases} base archives, expected 1`;
  if (manifest.kind === 'stream' && manifest.objects.length !== 1)
    return `a stream backup lists ${manifest.objects.length} objects, expected 1`;
  return undefined;
}

/** Checks a parsed manifest against the key it was read from; throws {@link InvalidManifestError} naming the problem. */
export function validateManifest(manifest: Manifest, key: string): ValidatedManifest {
  const problem = manifestProblem(manifest, key);
  if (problem) throw new InvalidManifestError(`manifest ${key} is rejected: ${problem}`);
  return manifest as ValidatedManifest;
}

export function serializeManifest(manifest: Manifest): string {
  return `${JSON.stringify(ManifestSchema.parse(manifest), null, 2)}\n`;
}
