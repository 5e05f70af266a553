/** Quoting for the shell programs pgkeep writes (archive_command, restore_command, restore scripts). */

/** `value` as one single-quoted shell word, whatever it holds. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}
