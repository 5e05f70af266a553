/**
 * `npm run bench [NAME...]`: runs the benchmarks one after another (they would disturb each other
 * in parallel on a small machine) and prints each one's figures side by side with its reference.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = import.meta.dirname;
const all = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.endsWith('-helpers.ts'))
  .map((f) => f.replace(/\.ts$/, ''))
  .sort();
const chosen = process.argv.slice(2);
const unknown = chosen.filter((name) => !all.includes(name));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(', ')}; there are: ${all.join(', ')}`);
  process.exit(2);
}
let failed = false;
for (const name of chosen.length ? chosen : all) {
  console.log(`\n=== ${name} ===`);
  const result = spawnSync(process.execPath, [join(dir, `${name}.ts`)], { stdio: 'inherit' });
  if (result.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
