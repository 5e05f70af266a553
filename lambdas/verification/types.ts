/** The data the verification state machine passes between states (cdk/constructs/verification.ts wires it). */

export interface PickBackupInput {
  /** Verify this cluster's backups. @default the cluster whose newest verification report is oldest */
  readonly cluster?: string;
  /** Verify this backup. @default the cluster's newest backup */
  readonly backupId?: string;
}

/** `$.backup`: what the Fargate task restores and where it writes its report. */
export interface PickedBackup {
  readonly cluster: string;
  readonly backupId: string;
  readonly manifestKey: string;
  readonly kind: 'logical' | 'base';
  /** PostgreSQL major version of the backup, chooses the task definition. */
  readonly pgMajor: number;
  readonly runId: string;
  readonly reportKey: string;
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
