/**
 * The shape of the source tree, checked on every `npm test`: no import cycles (static, dynamic or
 * type-only imports alike, since a cycle of any kind means two modules cannot be read apart) and
 * no source file outside test/ longer than 400 lines (split it along its seams instead).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../support/pgkeep-cli.ts';

const MAX_LINES = 400;
const SKIP = new Set(['node_modules', 'dist', 'cdk.out', '.git', 'test']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name.startsWith('.') || SKIP.has(entry.name)) return [];
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Each file's relative imports that resolve to another source file. */
function importGraph(files: readonly string[]): Map<string, string[]> {
  const known = new Set(files);
  return new Map(
    files.map((file) => {
      const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
      const targets = importedFiles
        .map((f) => f.fileName)
        .filter((name) => name.startsWith('.'))
        .map((name) => resolve(dirname(file), name))
        .filter((target) => known.has(target));
      return [file, [...new Set(targets)]];
    }),
  );
}

/** Every cycle, each once, as a list of files relative to the project root. */
function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') cycles.push(stack.slice(stack.indexOf(next)).concat(next));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return cycles.map((cycle) => cycle.map((f) => relative(PROJECT_ROOT, f)));
}

const files = sourceFiles(PROJECT_ROOT);

describe('source tree', () => {
  it('finds the sources it checks', () => {
    expect(files.map((f) => relative(PROJECT_ROOT, f))).toContain('agent/main.ts');
  });

  it('has no import cycle', () => {
    expect(findCycles(importGraph(files))).toEqual([]);
  });

  it('finds a cycle when there is one (the check can fail)', () => {
    const a = join(PROJECT_ROOT, 'a.ts');
    const b = join(PROJECT_ROOT, 'b.ts');
    expect(
      findCycles(
        new Map([
          [a, [b]],
          [b, [a]],
        ]),
      ),
    ).toEqual([['a.ts', 'b.ts', 'a.ts']]);
  });

  it(`has no file outside test/ over ${MAX_LINES} lines`, () => {
    const long = files
      .map((f) => ({
        file: relative(PROJECT_ROOT, f),
        lines: readFileSync(f, 'utf8').split('\n').length - 1,
      }))
      .filter((f) => f.lines > MAX_LINES);
    expect(long).toEqual([]);
  });
});
