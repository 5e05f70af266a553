/**
 * The contract between the verification state machine (cdk/constructs/verification.ts) and the
 * task it starts (`pgkeep verify --from-env`): the environment the state machine passes as RunTask
 * overrides, and the KMS encryption context the automation identity is sealed under. One
 * declaration that the CDK app, the agent and the tests import.
 */
import { z } from 'zod';

/**
 * One SQL check on restored data, the same in the agent's config (verify.assertions) and the deploy
 * config (verification.assertions): the query's first value, as text, must equal `expected`.
 */
export const VerifyAssertionSchema = z.strictObject({
  name: z.string().min(1),
  database: z.string().min(1),
  query: z.string().min(1),
  expected: z.union([z.string(), z.number(), z.boolean()]).transform(String),
});

/** Environment variables of the verification container, set per run as RunTask overrides. */
export const VERIFY_TASK_ENV = {
  /** The repository URL of the source the backup is restored from (ingest or a target). */
  repository: 'PGKEEP_REPOSITORY',
  /** `ingest` or the target's name: what the report names as its source. */
  source: 'PGKEEP_VERIFY_SOURCE',
  /** Secrets Manager secret with the source's `{"accessKeyId","secretAccessKey"}`; empty: the task role. */
  sourceSecretArn: 'PGKEEP_SOURCE_SECRET_ARN',
  /** The ingest bucket's URL: where the report is written, whatever the source. */
  reportRepository: 'PGKEEP_VERIFY_REPORT_REPOSITORY',
  cluster: 'PGKEEP_CLUSTER',
  backupId: 'PGKEEP_BACKUP_ID',
  runId: 'PGKEEP_VERIFY_RUN_ID',
  reportKey: 'PGKEEP_VERIFY_REPORT_KEY',
  kmsKeyArn: 'PGKEEP_KMS_KEY_ARN',
  /** The automation identity, sealed by the KMS key (base64 of KMS Encrypt's CiphertextBlob). */
  sealedIdentity: 'PGKEEP_SEALED_IDENTITY',
  /** JSON array of {@link VerifyAssertionSchema} (the deploy config's verification.assertions). */
  assertions: 'PGKEEP_VERIFY_ASSERTIONS',
} as const;

/**
 * The encryption context the automation identity is sealed and unsealed under. KMS binds the
 * ciphertext to it, and the task role's grant requires it, so the role cannot decrypt anything
 * else with the key, and a ciphertext made for another purpose does not unseal here.
 */
export const AUTOMATION_IDENTITY_CONTEXT: Readonly<Record<string, string>> = {
  application: 'pgkeep',
  purpose: 'restore-verification-identity',
};
