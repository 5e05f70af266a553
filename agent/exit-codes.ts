/**
 * The agent's exit codes, what each means, and which error gives which: the one table that the CLI
 * entry, `pgkeep help` and the README (tested against it) follow. PostgreSQL treats an
 * archive_command or restore_command exit above 125 as fatal (the server shuts down), so every
 * ordinary failure stays well below it.
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
  /**
   * The repository could not be reached or used: unreachable or failing, its bucket or directory
   * missing, or the credentials missing or refused. Retrying once that is fixed may succeed.
   */
  unavailable: 4,
  /** A stored object failed verification: corrupted, truncated, or the identity does not match. */
  integrity: 5,
  /** A WAL file of the same name but different content is already stored, or WAL of another cluster. */
  conflict: 6,
  /**
   * `pgkeep verify`: a backup restored but a check failed (PITR did not reach its target because a
   * WAL segment is missing, pg_amcheck found corruption, an SQL assertion failed, the restore did
   * not finish). Distinct from 5, where a stored object's bytes are damaged.
   */
  check: 7,
  /**
   * wal-fetch during archive recovery only, for any failure but "no such file": PostgreSQL takes
   * every code up to 125 from restore_command for "no such file" and would end recovery early,
   * losing the rest of the archive; above 125 it stops instead.
   */
  abortRecovery: 255,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** What each code means in a word or two, as `pgkeep help` and the README list them. */
export const EXIT_CODE_MEANINGS: Readonly<Record<keyof typeof ExitCode, string>> = {
  ok: 'ok',
  failed: 'failed',
  usage: 'usage',
  config: 'configuration',
  unavailable: 'repository unreachable',
  integrity: 'object failed verification',
  conflict: 'WAL conflict',
  check: 'a verification check failed',
  abortRecovery: 'wal-fetch could not restore during archive recovery',
};

/**
 * Exit code by error class name. Matching names rather than classes keeps the entry from importing
 * (and so evaluating at every start) the modules that define them.
 */
export const EXIT_CODE_BY_ERROR: Readonly<Record<string, ExitCodeValue>> = {
  UsageError: ExitCode.usage,
  ConfigError: ExitCode.config,
  InvalidStorageUrlError: ExitCode.config,
  StorageUnavailableError: ExitCode.unavailable,
  RepositoryNotFoundError: ExitCode.unavailable,
  AccessDeniedError: ExitCode.unavailable,
  ClockSkewError: ExitCode.unavailable,
  ObjectIntegrityError: ExitCode.integrity,
  AgeDecryptError: ExitCode.integrity,
  InvalidManifestError: ExitCode.integrity,
  WalConflictError: ExitCode.conflict,
  ForeignWalError: ExitCode.conflict,
  AmbiguousWalError: ExitCode.conflict,
  RestoredDataDirError: ExitCode.conflict,
  SpoolError: ExitCode.config,
  ArchiveMismatchError: ExitCode.config,
};

/** `code` (read back from a report, say) as one of the table's codes; anything else is `failed`. */
export function asExitCode(code: number): ExitCodeValue {
  return (Object.values(ExitCode) as number[]).includes(code) ? (code as ExitCodeValue) : ExitCode.failed;
}

/** The exit code for a failure: by its class (see {@link EXIT_CODE_BY_ERROR}), else `failed`. */
export function exitCodeFor(error: unknown): ExitCodeValue {
  const name = error instanceof Error ? error.name : '';
  return EXIT_CODE_BY_ERROR[name] ?? ExitCode.failed;
}

/** `0 ok, 1 failed, …` for `pgkeep help`. */
export function describeExitCodes(): string {
  return (Object.keys(ExitCode) as (keyof typeof ExitCode)[])
    .map((key) => `${ExitCode[key]} ${EXIT_CODE_MEANINGS[key]}`)
    .join(', ');
}
