/**
 * The agent's exit codes. PostgreSQL treats an archive_command or restore_command exit above 125
 * as fatal (the server shuts down), so every ordinary failure stays well below it.
 */
export const ExitCode = {
  /** Done. */
  ok: 0,
  /** The operation failed (a backup or restore did not complete; wal-fetch: no such WAL file). */
  failed: 1,
  /** Wrong command-line usage. */
  usage: 2,
  /** The configuration is missing or invalid (including: no recipient). */
  config: 3,
  /** The repository could not be reached; retrying later may succeed. */
  unavailable: 4,
  /** A stored object failed verification: corrupted, truncated, or the identity does not match. */
  integrity: 5,
  /** A WAL file of the same name but different content is already stored. */
  conflict: 6,
  /**
   * `pgkeep verify`: a backup restored but a check failed (PITR did not reach its target because a
   * WAL segment is missing, pg_amcheck found corruption, an SQL assertion failed, the restore did
   * not finish). Distinct from 5, where a stored object's bytes are damaged.
   */
  check: 7,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];
