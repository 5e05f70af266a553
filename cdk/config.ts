/**
 * The deployment config: one typed YAML file that says what the cloud pipeline protects and where
 * copies go. It is validated when the app synthesizes, so a typo fails `cdk synth` with the name of
 * the field instead of deploying a pipeline that silently skips a target.
 *
 * The documented example is deploy/pgkeep.deploy.example.yaml.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { assertClusterName } from '../core/keys.ts';
import { VerifyAssertionSchema } from '../core/verify-task.ts';

/** Where `npm run synth` reads the config when neither the context value nor the env var names one. */
export const DEFAULT_DEPLOY_CONFIG_PATH = 'deploy/pgkeep.deploy.example.yaml';
/** `cdk synth -c pgkeepConfig=path/to/file.yaml` */
export const DEPLOY_CONFIG_CONTEXT_KEY = 'pgkeepConfig';
/** `PGKEEP_DEPLOY_CONFIG=path/to/file.yaml cdk synth` */
export const DEPLOY_CONFIG_ENV_VAR = 'PGKEEP_DEPLOY_CONFIG';

const NAME = /^[a-z0-9][a-z0-9-]{0,19}$/;
const name = (what: string) =>
  z
    .string()
    .regex(
      NAME,
      `${what} must be 1-20 lower-case letters, digits and dashes, starting with a letter or digit`,
    );

const clusterName = z.string().superRefine((value, ctx) => {
  try {
    assertClusterName(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
});

const RATE = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/;
// EventBridge Scheduler cron: minutes hours day-of-month month day-of-week year, with one of the two days "?".
const CRON = /^cron\(\S+ \S+ \S+ \S+ \S+ \S+\)$/;
const scheduleExpression = z.string().superRefine((value, ctx) => {
  const rate = RATE.exec(value);
  if (rate) {
    const count = Number(rate[1]);
    if (count < 1) ctx.addIssue({ code: 'custom', message: `rate must be at least 1, got "${value}"` });
    if (count === 1 && rate[2]?.endsWith('s'))
      ctx.addIssue({ code: 'custom', message: `use the singular unit for a rate of 1, e.g. "rate(1 hour)"` });
    if (count > 1 && !rate[2]?.endsWith('s'))
      ctx.addIssue({
        code: 'custom',
        message: `use the plural unit for a rate above 1, e.g. "rate(5 minutes)"`,
      });
    return;
  }
  if (CRON.test(value)) {
    const fields = value.slice(5, -1).split(' ');
    if (fields[2] !== '?' && fields[4] !== '?')
      ctx.addIssue({
        code: 'custom',
        message: `cron "${value}" must have "?" in day-of-month or day-of-week (EventBridge Scheduler syntax)`,
      });
    return;
  }
  ctx.addIssue({
    code: 'custom',
    message: `"${value}" is not a schedule: use "rate(5 minutes)" or a 6-field "cron(0 3 * * ? *)"`,
  });
});

/** How much each target keeps; the same fields as core/retention-planner.ts's RetentionPolicy. */
export const RetentionPolicySchema = z.strictObject({
  /** The newest N backups of each group are always kept (at least 1: a group is never emptied). */
  minimumKeep: z.number().int().min(1).default(1),
  keepLast: z.number().int().min(0).optional(),
  keepDaily: z.number().int().min(0).optional(),
  keepWeekly: z.number().int().min(0).optional(),
  keepMonthly: z.number().int().min(0).optional(),
  keepYearly: z.number().int().min(0).optional(),
  /** Point-in-time recovery stays possible to any moment of the last N days. */
  pitrWindowDays: z.number().min(0).optional(),
});

const targetBase = {
  name: name('target name'),
  retention: RetentionPolicySchema,
  /**
   * Replication stores a cluster's settled WAL segments as one bundle object per run instead of one
   * object per segment (docs/architecture.md, "WAL bundles at targets"): about ten times fewer
   * PUTs, HEADs and Lambda copies; WAL reaches the target once settled (15 to 25 minutes after it
   * was archived). Every reader of the target (the agent, retention, replication, freshness) reads
   * bundles and single objects alike. @default true
   */
  walBundles: z.boolean().default(true),
};

const AwsS3TargetSchema = z.strictObject({
  ...targetBase,
  type: z.literal('aws-s3'),
  /** A bucket in this account, usually in another region; the replication role writes with IAM, no secret. */
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'not a valid S3 bucket name'),
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'not an AWS region such as eu-central-1'),
  /** Key prefix inside the bucket (no leading slash). @default '' */
  prefix: z.string().default(''),
});

const S3CompatibleTargetSchema = z.strictObject({
  ...targetBase,
  type: z.literal('s3-compatible'),
  endpoint: z.url({
    protocol: /^https$/,
    error: (issue) =>
      issue.input === undefined
        ? 'an s3-compatible target needs its endpoint, e.g. https://s3.us-west-004.backblazeb2.com'
        : 'endpoint must be an https:// URL',
  }),
  bucket: z.string().min(3).max(63),
  region: z.string().min(1),
  forcePathStyle: z.boolean().default(false),
  prefix: z.string().default(''),
  /**
   * The provider honours `If-None-Match: *` on PutObject (412 when the key exists), as R2 and MinIO
   * do: replication's copies then carry it (a copy made since its HEAD is not overwritten), and
   * keys a listing just showed absent get no HEAD. Leave it false for a provider that ignores the
   * header (it would overwrite), or when unsure. @default false
   */
  conditionalWrites: z.boolean().default(false),
  /**
   * Name of the Secrets Manager secret the stack creates empty for this target; the operator puts
   * `{"accessKeyId": "...", "secretAccessKey": "..."}` into it after deploying.
   */
  credentialsSecretName: z
    .string()
    .regex(/^[A-Za-z0-9/_+=.@-]{1,512}$/, 'secret names use letters, digits and /_+=.@-'),
  /**
   * Optional second secret, created empty like the first, for a key that may delete (a B2
   * application key with deleteFiles, say) while `credentialsSecretName` holds one that cannot.
   * Only retention's delete step may read it. @default - deletes use `credentialsSecretName`
   */
  deleteCredentialsSecretName: z
    .string()
    .regex(/^[A-Za-z0-9/_+=.@-]{1,512}$/, 'secret names use letters, digits and /_+=.@-')
    .optional(),
});

export const TargetSchema = z.discriminatedUnion('type', [AwsS3TargetSchema, S3CompatibleTargetSchema], {
  error: 'target type must be "aws-s3" or "s3-compatible"',
});

export const DeployConfigSchema = z
  .strictObject({
    /** Prefix of the stack names, so two pipelines can live in one account. */
    name: name('name').default('pgkeep'),
    /** Pin the stacks to an account and region; omit for environment-agnostic stacks. */
    env: z
      .strictObject({
        account: z.string().regex(/^\d{12}$/, 'account must be 12 digits'),
        region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'not an AWS region such as eu-west-1'),
      })
      .optional(),
    clusters: z
      .array(
        z.strictObject({
          name: clusterName,
          /**
           * Who may assume the cluster's host role: `ec2` (an instance profile) or `account` (any
           * principal of this account allowed by its own IAM policy, e.g. IAM Roles Anywhere or an SSO user).
           */
          hostAssumedBy: z.enum(['ec2', 'account']).default('ec2'),
        }),
      )
      .min(1, 'at least one cluster is required'),
    ingest: z.strictObject({
      objectLock: z.strictObject({
        mode: z.enum(['GOVERNANCE', 'COMPLIANCE']),
        defaultRetentionDays: z.number().int().min(1).max(36500),
      }),
      /**
       * Days ingest keeps; the daily retention run then deletes from ingest what is older and every
       * target holds (or drops by its own retention), whole backups and WAL before ingest's oldest
       * base backup (core/ingest-prune.ts). More than objectLock.defaultRetentionDays, and needs a
       * target. @default - ingest is never pruned
       */
      keepDays: z.number().int().min(1).max(36500).optional(),
    }),
    targets: z.array(TargetSchema).default([]),
    schedules: z.strictObject({
      replication: scheduleExpression,
      /**
       * A replication run with `{"verify": true}`: re-reads every copy and checks its sha256, the
       * only way a same-size corruption on a target is found. @default weekly, Saturday 04:00
       */
      replicationVerify: scheduleExpression.default('cron(0 4 ? * SAT *)'),
      /**
       * A replication run with `{"reconcile": true}`: lists ingest and every target in full, copies
       * what the cursors missed and skips what retention drops; the other runs list only what is
       * new. @default daily, 03:30
       */
      replicationReconcile: scheduleExpression.default('cron(30 3 * * ? *)'),
      retention: scheduleExpression,
      verification: scheduleExpression,
      freshness: scheduleExpression,
      /** IANA time zone for the cron expressions. @default 'UTC' */
      timeZone: z.string().min(1).default('UTC'),
    }),
    freshness: z
      .strictObject({
        maxDumpAgeHours: z.number().positive().default(26),
        maxWalAgeMinutes: z.number().positive().default(30),
        maxReplicationLagMinutes: z.number().positive().default(60),
        /** Per cluster and source: the last passed restore verification may be this old. @default 8 (a weekly schedule and a day) */
        maxVerificationAgeDays: z.number().positive().default(8),
      })
      .prefault({}),
    verification: z.strictObject({
      /** One Fargate image and task definition per major version. */
      postgresMajorVersions: z
        .array(z.number().int().min(13).max(18))
        .min(1, 'at least one PostgreSQL major version is required'),
      assertions: z.array(VerifyAssertionSchema).default([]),
      cpu: z.union([z.literal(1024), z.literal(2048), z.literal(4096), z.literal(8192)]).default(2048),
      memoryMiB: z.number().int().min(2048).max(61440).default(8192),
      ephemeralStorageGiB: z.number().int().min(21).max(200).default(100),
      /**
       * The automation identity sealed by the backup key: what `pgkeep keygen --kms-key ARN --output
       * FILE` wrote to FILE (base64, not secret: only the verification task roles may unseal it).
       * @default - none: the task cannot decrypt backups and every run fails, saying so
       */
      sealedIdentity: z
        .string()
        .trim()
        .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'not base64: paste the file pgkeep keygen --kms-key wrote')
        .optional(),
    }),
    alerts: z.strictObject({
      emails: z.array(z.email()).min(1, 'at least one alert email is required'),
    }),
    /** A role that may decrypt backups besides the verification task (break-glass restores). */
    operatorRoleArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/, 'not an IAM role ARN')
      .optional(),
  })
  .superRefine((config, ctx) => {
    const unique = (values: string[], path: (string | number)[], what: string) => {
      values.forEach((value, index) => {
        if (values.indexOf(value) !== index)
          ctx.addIssue({
            code: 'custom',
            path: [...path, index, 'name'],
            message: `duplicate ${what} "${value}"`,
          });
      });
    };
    unique(
      config.clusters.map((c) => c.name),
      ['clusters'],
      'cluster name',
    );
    unique(
      config.targets.map((t) => t.name),
      ['targets'],
      'target name',
    );
    config.targets.forEach((target, index) => {
      if (target.name === 'ingest')
        ctx.addIssue({
          code: 'custom',
          path: ['targets', index, 'name'],
          message: 'target name "ingest" is reserved for the ingest bucket',
        });
    });
    config.targets.forEach((target, index) => {
      if (
        target.type === 's3-compatible' &&
        target.deleteCredentialsSecretName === target.credentialsSecretName
      )
        ctx.addIssue({
          code: 'custom',
          path: ['targets', index, 'deleteCredentialsSecretName'],
          message: `target "${target.name}": deleteCredentialsSecretName must name another secret than credentialsSecretName, or the copy steps could read the delete-capable key`,
        });
    });
    const { keepDays, objectLock } = config.ingest;
    if (keepDays !== undefined && keepDays <= objectLock.defaultRetentionDays)
      ctx.addIssue({
        code: 'custom',
        path: ['ingest', 'keepDays'],
        message: `ingest.keepDays is ${keepDays}, but a version under Object Lock cannot be deleted before ingest.objectLock.defaultRetentionDays (${objectLock.defaultRetentionDays}) have passed; set keepDays to at least ${objectLock.defaultRetentionDays + 1}, or remove it to never prune ingest`,
      });
    if (keepDays !== undefined && config.targets.length === 0)
      ctx.addIssue({
        code: 'custom',
        path: ['ingest', 'keepDays'],
        message: `ingest.keepDays is ${keepDays}, but there are no targets: ingest holds the only copy and is pruned only of what every target holds; add a target or remove keepDays`,
      });
    const secrets = config.targets.flatMap((t) =>
      t.type === 's3-compatible'
        ? [t.credentialsSecretName, ...(t.deleteCredentialsSecretName ? [t.deleteCredentialsSecretName] : [])]
        : [],
    );
    secrets.forEach((secret, index) => {
      if (secrets.indexOf(secret) !== index)
        ctx.addIssue({
          code: 'custom',
          path: ['targets'],
          message: `secret "${secret}" is used by two targets; give each provider its own credentials`,
        });
    });
  });

export type DeployConfig = z.infer<typeof DeployConfigSchema>;
export type TargetConfig = z.infer<typeof TargetSchema>;
/** The restore-verification settings of a deploy config. */
export type VerificationConfig = DeployConfig['verification'];
export type RetentionPolicy = z.infer<typeof RetentionPolicySchema>;

/** The config is not valid; `field` is the dotted path of the first offending field. */
export class DeployConfigError extends Error {
  override name = 'DeployConfigError';
  readonly field: string;
  constructor(message: string, field: string, options?: ErrorOptions) {
    super(message, options);
    this.field = field;
  }
}

/** Validates a parsed config object; the error names the field (`targets.1.endpoint`) and what is wrong. */
export function validateDeployConfig(value: unknown, source: string): DeployConfig {
  const result = DeployConfigSchema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue?.path.join('.') || '(root)';
  const more = result.error.issues.length > 1 ? ` (and ${result.error.issues.length - 1} more)` : '';
  throw new DeployConfigError(`invalid deploy config ${source}: ${field}: ${issue?.message}${more}`, field);
}

/** Parses YAML text and validates it. */
export function parseDeployConfig(yamlText: string, source: string): DeployConfig {
  let value: unknown;
  try {
    value = parseYaml(yamlText);
  } catch (cause) {
    throw new DeployConfigError(
      `deploy config ${source} is not valid YAML: ${(cause as Error).message}`,
      '(root)',
      {
        cause,
      },
    );
  }
  return validateDeployConfig(value, source);
}

/** Reads and validates the config file at `path`. */
export function loadDeployConfig(path: string): DeployConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new DeployConfigError(
      `cannot read deploy config ${path}: ${(cause as NodeJS.ErrnoException).code ?? cause}; pass another path with -c ${DEPLOY_CONFIG_CONTEXT_KEY}=<file> or ${DEPLOY_CONFIG_ENV_VAR}`,
      '(file)',
      { cause },
    );
  }
  return parseDeployConfig(text, path);
}
