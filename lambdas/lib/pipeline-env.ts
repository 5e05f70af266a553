/**
 * The configuration the CDK app hands every pipeline Lambda through environment variables, and its
 * parser. The CDK side (cdk/constructs/*) writes exactly these names; a handler reads them once per
 * cold start, and a missing or malformed variable fails loudly naming the variable.
 */
import { z } from 'zod';

export const ENV = {
  ingestBucket: 'PGKEEP_INGEST_BUCKET',
  ingestRegion: 'PGKEEP_INGEST_REGION',
  clusters: 'PGKEEP_CLUSTERS',
  targets: 'PGKEEP_TARGETS',
  /** Objects per "Copy batch to target" invocation. */
  batchSize: 'PGKEEP_BATCH_SIZE',
  /** Batches per run; what is left is picked up by the next scheduled run. */
  maxBatchesPerRun: 'PGKEEP_MAX_BATCHES_PER_RUN',
  metricNamespace: 'PGKEEP_METRIC_NAMESPACE',
  /** Objects larger than this are copied by the "Copy large objects" fan-out, not inside one batch. */
  largeObjectBytes: 'PGKEEP_LARGE_OBJECT_BYTES',
  /** Part size of streamed multipart copies. */
  copyPartBytes: 'PGKEEP_COPY_PART_BYTES',
  /** Parts per "Copy part range" invocation of a large copy. */
  partsPerInvocation: 'PGKEEP_PARTS_PER_INVOCATION',
  /** Days ingest keeps before the pipeline prunes what every target is done with; unset: never. */
  ingestKeepDays: 'PGKEEP_INGEST_KEEP_DAYS',
} as const;

/** The name the pipeline gives the ingest bucket as a location (reserved: no target may take it). */
export const INGEST_LOCATION = 'ingest';

const AwsTargetSchema = z.strictObject({
  name: z.string(),
  type: z.literal('aws-s3'),
  bucket: z.string(),
  region: z.string(),
  prefix: z.string(),
  /** Settled WAL goes to the target as bundles (core/wal-bundle.ts), not one object per segment. */
  walBundles: z.boolean().optional(),
});

const CompatibleTargetSchema = z.strictObject({
  name: z.string(),
  type: z.literal('s3-compatible'),
  endpoint: z.string(),
  bucket: z.string(),
  region: z.string(),
  forcePathStyle: z.boolean(),
  prefix: z.string(),
  /** The provider honours `If-None-Match: *` (see {@link honoursIfNoneMatch}). */
  conditionalWrites: z.boolean().optional(),
  /** Settled WAL goes to the target as bundles (core/wal-bundle.ts), not one object per segment. */
  walBundles: z.boolean().optional(),
  /** The Secrets Manager secret with `{"accessKeyId","secretAccessKey"}`. */
  credentialsSecretArn: z.string(),
  /** A second secret whose key may delete; only retention's delete step is given it (and may read it). */
  deleteCredentialsSecretArn: z.string().optional(),
});

export const RuntimeTargetSchema = z.discriminatedUnion('type', [AwsTargetSchema, CompatibleTargetSchema]);
/** A replication target as a Lambda sees it (no credentials, only where to find them). */
export type RuntimeTarget = z.infer<typeof RuntimeTargetSchema>;

/**
 * Whether a create-only PutObject to `target` is refused when the key exists (412), so a copy can
 * trust the header: AWS S3 honours `If-None-Match: *`; an S3-compatible provider only when its
 * config says so (one that ignores the header would overwrite).
 */
export function honoursIfNoneMatch(target: RuntimeTarget): boolean {
  return target.type === 'aws-s3' || target.conditionalWrites === true;
}

/** A missing or malformed environment variable: a deployment bug, never retried. */
export class PipelineConfigError extends Error {
  override name = 'PipelineConfigError';
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name];
  if (value === undefined || value === '')
    throw new PipelineConfigError(
      `environment variable ${name} is not set; the CDK app sets it on every pipeline Lambda`,
    );
  return value;
}

function json<T>(env: NodeJS.ProcessEnv, name: string, schema: z.ZodType<T>): T {
  let value: unknown;
  try {
    value = JSON.parse(required(env, name));
  } catch (cause) {
    if (cause instanceof PipelineConfigError) throw cause;
    throw new PipelineConfigError(`environment variable ${name} is not valid JSON`, { cause });
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new PipelineConfigError(
      `environment variable ${name} is invalid at ${issue?.path.join('.')}: ${issue?.message}`,
    );
  }
  return result.data;
}

export interface PipelineEnv {
  readonly ingestBucket: string;
  readonly ingestRegion: string | undefined;
  readonly clusters: string[];
  readonly targets: RuntimeTarget[];
  readonly batchSize: number;
  readonly maxBatchesPerRun: number;
  readonly metricNamespace: string;
  /** @default 1 GiB: at a conservative 20 MB/s one Lambda copies that in under a minute, a batch of them in 15. */
  readonly largeObjectBytes?: number;
  /**
   * @default 16 MiB: copyObject then keeps up to 3 parts in flight within its 32 MiB hash buffer
   * (with 64 MiB parts it would copy one part at a time). Large copies raise it as needed.
   */
  readonly copyPartBytes?: number;
  /** @default 64 (1 GiB per "Copy part range" invocation with 16 MiB parts) */
  readonly partsPerInvocation?: number;
  /** Ingest pruning's window (core/ingest-prune.ts). @default - ingest is never pruned */
  readonly ingestKeepDays?: number;
}

/** The copy tuning of `env` with its defaults filled in. */
export function copyTuning(env: PipelineEnv): {
  largeObjectBytes: number;
  copyPartBytes: number;
  partsPerInvocation: number;
} {
  return {
    largeObjectBytes: env.largeObjectBytes ?? 1024 * 1024 * 1024,
    copyPartBytes: env.copyPartBytes ?? 16 * 1024 * 1024,
    partsPerInvocation: env.partsPerInvocation ?? 64,
  };
}

export function readPipelineEnv(env: NodeJS.ProcessEnv = process.env): PipelineEnv {
  const positive = (name: string, fallback: number) => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1)
      throw new PipelineConfigError(`environment variable ${name} must be a positive integer, got "${raw}"`);
    return value;
  };
  return {
    ingestBucket: required(env, ENV.ingestBucket),
    ingestRegion: env[ENV.ingestRegion] || env.AWS_REGION,
    clusters: json(env, ENV.clusters, z.array(z.string())),
    targets: json(env, ENV.targets, z.array(RuntimeTargetSchema)),
    batchSize: positive(ENV.batchSize, 200),
    maxBatchesPerRun: positive(ENV.maxBatchesPerRun, 40),
    metricNamespace: env[ENV.metricNamespace] || 'pgkeep',
    largeObjectBytes: positive(ENV.largeObjectBytes, 1024 * 1024 * 1024),
    copyPartBytes: positive(ENV.copyPartBytes, 16 * 1024 * 1024),
    partsPerInvocation: positive(ENV.partsPerInvocation, 64),
    ...(env[ENV.ingestKeepDays] ? { ingestKeepDays: positive(ENV.ingestKeepDays, 0) } : {}),
  };
}

/** The target called `name`, or a PipelineConfigError listing the known ones. */
export function findTarget(env: PipelineEnv, name: string): RuntimeTarget {
  const target = env.targets.find((t) => t.name === name);
  if (!target)
    throw new PipelineConfigError(
      `unknown target "${name}"; known targets: ${env.targets.map((t) => t.name).join(', ') || '(none)'}`,
    );
  return target;
}
