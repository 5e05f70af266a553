/** The errors a WAL push rejects with when the repository must not take the file. */

/** The repository already holds this WAL file name with other content. */
export class WalConflictError extends Error {
  override name = 'WalConflictError';
}

/** The WAL file belongs to another PostgreSQL cluster than the repository's (or the local one). */
export class ForeignWalError extends Error {
  override name = 'ForeignWalError';
}
