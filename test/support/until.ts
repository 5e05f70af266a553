/**
 * Polls `fn` until it returns something truthy and returns that; throws after `timeoutMs`, naming
 * `what` and, when given, what `detail()` says then (a child's output, a server log).
 */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  {
    timeoutMs = 30_000,
    pollMs = 50,
    detail,
  }: { timeoutMs?: number; pollMs?: number; detail?: () => string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${detail ? `:\n${detail()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
