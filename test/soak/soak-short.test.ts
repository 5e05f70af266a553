// The soak (scripts/soak.ts) shortened, part of `npm test`: 60 s of pgbench under seeded ingest
// faults, then PITR to 3 random marks, no archive gap, no plaintext, nothing left behind (about
// two minutes in all). A failure prints the seed: replay it with SOAK_SEED. `npm run soak` is the
// full-length run. PGKEEP_SOAK_SHORT=0 skips it.
import { describe, expect, it } from 'vitest';

describe.skipIf(process.env.PGKEEP_SOAK_SHORT === '0')('soak, short', () => {
  it('survives 60 s of seeded faults: PITR exact, no gap, no plaintext, nothing left', async () => {
    process.env.SOAK_SECONDS ??= '60';
    process.env.SOAK_PITR_POINTS ??= '3';
    // The soak reads its settings when loaded.
    const { soak } = await import('../../scripts/soak.ts');
    const result = await soak();
    expect(result.pitrChecked).toBe(Number(process.env.SOAK_PITR_POINTS));
    expect(result.marks).toBeGreaterThan(10);
    expect(result.faults.requests).toBeGreaterThan(0);
  }, 600_000);
});
