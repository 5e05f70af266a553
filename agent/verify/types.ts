/** What `runVerify` takes, and the state a run builds up as it goes. */
import type { VerifyCheck, VerifyReport } from '../../core/verify-report.ts';
import type { Storage } from '../../storage/storage.ts';
import type { TableRows, VerifyAssertion } from './checks.ts';

export type { VerifyAssertion };

/** Which backup to restore, and how. */
export type VerifySelection =
  /** The newest dump of one database (or its dump in `backupId`). */
  | { readonly db: string; readonly backupId?: string | undefined }
  /** One backup: every dump of a logical backup, or a base backup recovered to its end point. */
  | { readonly backupId: string }
  /** The newest stream backup taken under a name (`pgkeep stream backup --name`), or `backupId`. */
  | { readonly stream: string; readonly backupId?: string | undefined }
  /**
   * A base backup plus archived WAL to a target: the time or LSN given, or by default a random
   * point inside the window the archive covers, chosen from the run id so a run can be reproduced.
   */
  | {
      readonly pitr: true;
      readonly targetTime?: string | undefined;
      readonly targetLsn?: string | undefined;
    };

export interface VerifyOptions {
  /** The repository to read from: the ingest bucket or a replication target's copy. */
  readonly storage: Storage;
  /** Its name in the report: `ingest`, or the target's name. */
  readonly source: string;
  readonly cluster: string;
  /** age identities, as `readIdentityFile` returns them (or unsealed by the cloud task). */
  readonly identities: readonly string[];
  readonly selection: VerifySelection;
  readonly assertions?: readonly VerifyAssertion[];
  /** Names the report (`verify/<cluster>/<runId>.json`) and seeds the default PITR target. */
  readonly runId: string;
  /** Where the private scratch directory is made (removed again at the end). */
  readonly workDir: string;
  /** Stream backups: the shell command each name's plaintext is restored into, when one is configured. */
  readonly streamRestoreCommands?: Readonly<Record<string, string>>;
}

/** A step of a run, for progress display. */
export interface VerifyEvent {
  readonly phase: 'select' | 'fetch-wal' | 'restore' | 'recover' | 'check' | 'cleanup';
  readonly detail: string;
}

export interface VerifyDeps {
  /** Directory of the PostgreSQL programs. @default - /usr/lib/postgresql/<the backup's major>/bin if present, else PATH */
  readonly pgBin?: string | undefined;
  /** Stops the run; the scratch cluster is removed all the same. */
  readonly signal?: AbortSignal;
  /** How long recovery may take before the run gives up. @default 21600 (6 h) */
  readonly recoveryTimeoutSeconds?: number;
  readonly now?: () => Date;
  readonly agentVersion?: string;
  readonly onEvent?: (event: VerifyEvent) => void;
}

/** What a run has found so far; a failure part-way still leaves what was learned. */
export interface VerifyProgress {
  backupId: string | undefined;
  mode: VerifyReport['mode'];
  readonly checks: VerifyCheck[];
  measures: NonNullable<VerifyReport['measures']>;
  tables: TableRows[];
}
