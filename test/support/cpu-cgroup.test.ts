// The CPU share `npm run bench lambda-duration` runs a handler under: a process started in the
// cgroup is held to its quota (the kernel throttles it), and the cgroup is gone afterwards.
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CPU_CGROUP_ROOT, lambdaCpuShare, runInCgroup, withCpuCgroup } from './cpu-cgroup.ts';
import { NODE } from './pgkeep-cli.ts';

// Only where a cgroup can be made here (root, cgroup v1): elsewhere the bench refuses to run.
const writable = (() => {
  const probe = `${CPU_CGROUP_ROOT}/pgkeep-probe-${process.pid}`;
  try {
    mkdirSync(probe);
    rmdirSync(probe);
    return true;
  } catch {
    return false;
  }
})();

describe('cpu cgroup', () => {
  it('gives Lambda its share: one vCPU at 1,769 MB', () => {
    expect(lambdaCpuShare(1769)).toBe(1);
    expect(lambdaCpuShare(512)).toBeCloseTo(0.289, 3);
  });

  it.skipIf(!writable)('throttles a busy child to its share and removes the cgroup after', async () => {
    let path = '';
    const result = await withCpuCgroup('pgkeep-test', 0.05, async (cgroup) => {
      path = cgroup.path;
      // Busy for 0.5 s of wall time: 5 ms per 100 ms period cannot cover it.
      const run = await runInCgroup(cgroup, [
        NODE,
        '-e',
        'const end = Date.now() + 500; while (Date.now() < end);',
      ]);
      return { code: run.code, ...(await cgroup.throttling()) };
    });
    expect(result.code).toBe(0);
    expect(result.throttled).toBeGreaterThan(0);
    expect(existsSync(path)).toBe(false);
  });

  it.skipIf(!writable)('refuses to run the work when the cgroup cannot be made, saying why', async () => {
    let ran = false;
    await expect(
      withCpuCgroup('no-such-parent/pgkeep-test', 0.5, async () => {
        ran = true;
      }),
    ).rejects.toThrow(/cannot make cgroup .*no-such-parent.* limited to 0\.500 CPU/);
    expect(ran).toBe(false);
  });

  it.skipIf(!writable)('removes the cgroup when the work fails', async () => {
    let path = '';
    await expect(
      withCpuCgroup('pgkeep-test', 0.5, async (cgroup) => {
        path = cgroup.path;
        throw new Error('work failed');
      }),
    ).rejects.toThrow('work failed');
    expect(existsSync(path)).toBe(false);
  });
});
