/** The data the verification state machine passes between states (cdk/constructs/verification.ts wires it). */
import { z } from 'zod';

/** The execution input (the schedule sends `{"trigger": "schedule"}`; other fields are ignored). */
export const PickBackupInputSchema = z.looseObject({
  cluster: z.string().optional(),
  backupId: z.string().optional(),
  source: z.string().optional(),
});
export const PickedBackupSchema = z.object({
  cluster: z.string(),
  backupId: z.string(),
  manifestKey: z.string(),
  kind: z.enum(['logical', 'base', 'stream']),
  pgMajor: z.number().int(),
  runId: z.string(),
  reportKey: z.string(),
  source: z.string(),
  repository: z.string(),
  sourceSecretArn: z.string(),
});
export const RecordResultInputSchema = z.looseObject({
  backup: PickedBackupSchema.optional(),
  error: z.looseObject({ Error: z.string().optional(), Cause: z.string().optional() }).optional(),
});

export interface PickBackupInput {
  /** Verify this cluster's backups. @default the cluster whose newest verification report is oldest */
  readonly cluster?: string;
  /** Verify this backup. @default the cluster's newest backup */
  readonly backupId?: string;
  /** Restore from this source (`ingest` or a target's name). @default the one verified longest ago */
  readonly source?: string;
}

/** `$.backup`: what the Fargate task restores and where it writes its report. */
export interface PickedBackup {
  readonly cluster: string;
  readonly backupId: string;
  readonly manifestKey: string;
  readonly kind: 'logical' | 'base' | 'stream';
  /** PostgreSQL major version of the backup, chooses the task definition. */
  readonly pgMajor: number;
  readonly runId: string;
  readonly reportKey: string;
  /** `ingest` or the target whose copy is restored. */
  readonly source: string;
  /** The agent's repository URL of the source. */
  readonly repository: string;
  /** The source's credentials secret; '' when the task role reads it (ingest, AWS targets). */
  readonly sourceSecretArn: string;
}

export interface RecordResultInput {
  readonly backup?: PickedBackup;
  /** Present when an earlier state failed (Step Functions' Catch output). */
  readonly error?: { readonly Error?: string; readonly Cause?: string };
}

export interface RecordResultOutput {
  readonly passed: boolean;
  readonly summary: string;
  readonly reportKey?: string;
}
