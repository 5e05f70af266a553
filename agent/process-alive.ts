/**
 * Whether a process with this pid exists. EPERM means it exists but belongs to another user, which
 * still counts: a lock or pid file must not be taken over from a live process.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
