// deploy/nixos: these machines have no Nix store or nixpkgs, so the module is checked as far as
// that allows: every file parses (nix-instantiate --parse, Debian's nix-bin), and the sandbox the
// module gives pgkeep's services is the one `pgkeep systemd-unit` prints. The VM test
// (deploy/nixos/test.nix) needs a machine with Nix; docs/nixos.md gives the command.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { renderNixHardening } from '../../agent/systemd/unit.ts';
import { prerequisiteProblem } from '../../scripts/prerequisites.ts';
import { PROJECT_ROOT } from '../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);
const NIX_DIR = join(PROJECT_ROOT, 'deploy/nixos');

describe('deploy/nixos', () => {
  it('parses every .nix file', async () => {
    const files = (await readdir(NIX_DIR)).filter((f) => f.endsWith('.nix')).sort();
    expect(files).toEqual(['hardening.nix', 'module.nix', 'package.nix', 'test.nix']);
    expect(prerequisiteProblem('nix-instantiate'), 'nix-instantiate parses the module').toBeUndefined();
    for (const file of files) {
      // Exits non-zero, naming the line, on any syntax error.
      await expect(
        execFileAsync('nix-instantiate', ['--parse', join(NIX_DIR, file)]),
        `${file} must parse`,
      ).resolves.toMatchObject({ stdout: expect.any(String) });
    }
  });

  it('sandboxes the services exactly as the generated systemd unit does', async () => {
    expect(await readFile(join(NIX_DIR, 'hardening.nix'), 'utf8')).toBe(renderNixHardening());
  });
});
