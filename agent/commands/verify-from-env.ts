/**
 * `pgkeep verify --from-env`: the restore-verification task's entry (verify/Dockerfile). Reads what
 * the state machine passed as RunTask overrides (core/verify-task.ts), reads the source's provider
 * key from Secrets Manager when it has one, unseals the automation identity with one KMS Decrypt,
 * runs the same `runVerify` as `pgkeep verify`, and writes the report to the key the state machine
 * picked in ingest. A run that cannot be carried out still writes a failed report naming why, so
 * the pipeline records the cause rather than "no report".
 */
import { tmpdir } from 'node:os';
import { z } from 'zod';
import { verifyReportKey } from '../../core/keys.ts';
import { VERIFY_REPORT_FORMAT, type VerifyReport } from '../../core/verify-report.ts';
import { VERIFY_TASK_ENV, VerifyAssertionSchema } from '../../core/verify-task.ts';
import { secretsManagerReader } from '../../lambdas/lib/secrets.ts';
import { openStorage, parseStorageUrl } from '../../storage/open-storage.ts';
import { createS3Client, S3Storage } from '../../storage/s3-storage.ts';
import type { Storage } from '../../storage/storage.ts';
import { writeVerifyReport } from '../../storage/verify-reports.ts';
import { withWalBundles } from '../../storage/wal-bundles.ts';
import { ConfigError } from '../config.ts';
import { asExitCode, ExitCode, type ExitCodeValue } from '../exit-codes.ts';
import { type KmsSealer, unsealIdentity } from '../kms/automation-identity.ts';
import { runVerify } from '../verify/run-verify.ts';
import { AGENT_VERSION } from '../version.ts';
import type { CommandContext } from './command.ts';
import { renderReport } from './verify-render.ts';

type TaskEnv = { -readonly [K in keyof typeof VERIFY_TASK_ENV]: string };

/** The task's environment; every variable but the source secret is required, and named when missing. */
export function readTaskEnv(env: NodeJS.ProcessEnv): TaskEnv {
  const out = {} as TaskEnv;
  for (const [field, name] of Object.entries(VERIFY_TASK_ENV) as [keyof TaskEnv, string][]) {
    const value = env[name] ?? '';
    const optional = field === 'sourceSecretArn' || field === 'assertions';
    if (value === '' && !optional)
      throw new ConfigError(
        `${name} is not set: pgkeep verify --from-env runs in the verification task, whose state machine sets it`,
      );
    out[field] = value;
  }
  if (out.reportKey !== verifyReportKey(out.cluster, out.runId))
    throw new ConfigError(
      `${VERIFY_TASK_ENV.reportKey} "${out.reportKey}" is not the report key of cluster ${out.cluster} run ${out.runId} (${verifyReportKey(out.cluster, out.runId)})`,
    );
  return out;
}

function parseAssertions(json: string) {
  if (json === '') return [];
  try {
    return z.array(VerifyAssertionSchema).parse(JSON.parse(json));
  } catch (error) {
    throw new ConfigError(
      `${VERIFY_TASK_ENV.assertions} is not a list of assertions: ${(error as Error).message}`,
    );
  }
}

/** The source repository: with the provider's own key when it has a secret, else the task role. */
async function openSource(task: TaskEnv): Promise<Storage> {
  // A provider's copy: its WAL may be in bundles (storage/wal-bundles.ts).
  if (task.sourceSecretArn === '') return withWalBundles(openStorage(task.repository));
  const parsed = parseStorageUrl(task.repository);
  if (parsed.scheme !== 's3')
    throw new ConfigError(
      `${VERIFY_TASK_ENV.sourceSecretArn} is set but the source ${task.repository} is not s3://`,
    );
  const credentials = await secretsManagerReader()(task.sourceSecretArn);
  const client = createS3Client(parsed);
  client.config.credentials = async () => credentials;
  return withWalBundles(new S3Storage(parsed, client));
}

function failedReport(task: TaskEnv, startedAt: Date, error: unknown): VerifyReport {
  const detail = (error as Error).message ?? String(error);
  return {
    format: VERIFY_REPORT_FORMAT,
    runId: task.runId,
    cluster: task.cluster,
    backupId: task.backupId,
    mode: 'logical',
    source: task.source,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    passed: false,
    exitCode: ExitCode.failed,
    summary: `backup ${task.backupId} from ${task.source} could not be verified: ${detail}`,
    checks: [{ name: 'run', passed: false, detail }],
    agentVersion: AGENT_VERSION,
  };
}

export interface FromEnvDeps {
  /** @default the real KMS in the key's region (aws-kms.ts) */
  readonly kms?: KmsSealer;
}

export async function verifyFromEnv(context: CommandContext, deps: FromEnvDeps = {}): Promise<ExitCodeValue> {
  const task = readTaskEnv(context.env);
  const assertions = parseAssertions(task.assertions);
  const reports = openStorage(task.reportRepository);
  const startedAt = new Date();
  const abort = new AbortController();
  const stop = () => abort.abort(new Error('interrupted'));
  process.once('SIGTERM', stop);
  let report: VerifyReport;
  try {
    const kms = deps.kms ?? (await import('../kms/aws-kms.ts')).awsKmsSealer(task.kmsKeyArn);
    const identity = await unsealIdentity(task.sealedIdentity, task.kmsKeyArn, kms);
    report = await runVerify(
      {
        storage: await openSource(task),
        source: task.source,
        cluster: task.cluster,
        identities: [identity],
        selection: { backupId: task.backupId },
        assertions,
        runId: task.runId,
        workDir: context.env.PGKEEP_VERIFY_WORKDIR || tmpdir(),
      },
      {
        pgBin: context.env.PGKEEP_PG_BIN || undefined,
        signal: abort.signal,
        agentVersion: AGENT_VERSION,
        onEvent: (event) => context.stderr.write(`pgkeep verify: ${event.phase}: ${event.detail}\n`),
      },
    );
  } catch (error) {
    report = failedReport(task, startedAt, error);
  } finally {
    process.removeListener('SIGTERM', stop);
  }
  const key = await writeVerifyReport(reports, report);
  context.stdout.write(renderReport(report, [`written to ${key} in ${reports.displayUrl}`]));
  if (!report.passed) context.stderr.write(`pgkeep verify: ${report.summary}\n`);
  return asExitCode(report.exitCode);
}
