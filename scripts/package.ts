// Makes the agent's release from dist/ (run scripts/build.ts first): a self-contained directory that
// carries its own Node, as a tarball and as a .deb, so a host needs no system Node (Debian 12 ships
// Node 18, the agent needs 22.15). `npm run build` runs it; test/scripts/package.test.ts runs what
// it makes on a PATH without Node.
//
//   release/pgkeep-VERSION-linux-ARCH/bin/pgkeep     launcher: lib/node lib/pgkeep.mjs "$@"
//   release/pgkeep-VERSION-linux-ARCH/lib/           node, pgkeep.mjs, chunks/
//   release/pgkeep-VERSION-linux-ARCH.tar.gz         that directory
//   release/pgkeep_VERSION_DEBARCH.deb               it under /opt/pgkeep, /usr/bin/pgkeep a symlink
//
// Why a directory and not a single executable application: the agent re-executes itself by
// `node <bundle>` (archive_command, the transient pusher), and its entry loads each command's
// chunk on demand; docs/install.md has the measured start-up of each candidate.
import { execFileSync } from 'node:child_process';
import { chmod, cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');

/** The launcher: finds lib/ beside bin/ through any symlink (/usr/bin/pgkeep), then runs the bundle. */
const LAUNCHER = `#!/bin/sh
# pgkeep with the Node it was built and tested with; needs no other Node on the host.
here=$(dirname "$(readlink -f "$0")")
exec "$here/../lib/node" "$here/../lib/pgkeep.mjs" "$@"
`;

/** Debian's architecture names for Node's. */
const DEB_ARCH: Readonly<Record<string, string>> = { x64: 'amd64', arm64: 'arm64' };

export interface Release {
  /** The self-contained directory; `bin/pgkeep` in it is the program. */
  readonly dir: string;
  readonly tarball: string;
  readonly deb: string;
}

/** The project's Node binary (the "node" devDependency): the one the tests run the agent with. */
function projectNode(): string {
  return join(dirname(createRequire(join(ROOT, 'package.json')).resolve('node/package.json')), 'bin/node');
}

/** Builds the release of `distDir` into `outDir` (replaced). */
export async function packageAgent(
  distDir = join(ROOT, 'dist'),
  outDir = join(ROOT, 'release'),
): Promise<Release> {
  const { version, description } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'));
  const debArch = DEB_ARCH[process.arch];
  if (!debArch) throw new Error(`no release for architecture ${process.arch}: only x64 and arm64 have one`);
  const name = `pgkeep-${version}-linux-${process.arch}`;
  await rm(outDir, { recursive: true, force: true });
  const dir = join(outDir, name);
  await mkdir(join(dir, 'bin'), { recursive: true });
  await cp(distDir, join(dir, 'lib'), { recursive: true });
  await cp(projectNode(), join(dir, 'lib/node'));
  await writeFile(join(dir, 'bin/pgkeep'), LAUNCHER);
  await chmod(join(dir, 'bin/pgkeep'), 0o755);

  const tarball = join(outDir, `${name}.tar.gz`);
  // gzip -1: a third faster than the default level for 1% more bytes (the Node binary dominates).
  execFileSync('tar', ['-C', outDir, '--owner=0', '--group=0', '-I', 'gzip -1', '-cf', tarball, name]);

  const debRoot = join(outDir, 'deb');
  await cp(dir, join(debRoot, 'opt/pgkeep'), { recursive: true });
  await mkdir(join(debRoot, 'usr/bin'), { recursive: true });
  await symlink('/opt/pgkeep/bin/pgkeep', join(debRoot, 'usr/bin/pgkeep'));
  await mkdir(join(debRoot, 'DEBIAN'));
  // Node's official linux binaries need glibc >= 2.28 and libstdc++ (Debian 10, Ubuntu 20.04, RHEL 8).
  await writeFile(
    join(debRoot, 'DEBIAN/control'),
    `Package: pgkeep
Version: ${version}
Architecture: ${debArch}
Maintainer: pgkeep maintainers <pgkeep@localhost>
Depends: libc6 (>= 2.28), libstdc++6
Recommends: zstd, postgresql-client
Section: database
Priority: optional
Description: ${description}
 The pgkeep agent with its own Node runtime in /opt/pgkeep; /usr/bin/pgkeep runs it.
`,
  );
  const deb = join(outDir, `pgkeep_${version}_${debArch}.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', debRoot, deb], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await rm(debRoot, { recursive: true, force: true });
  return { dir, tarball, deb };
}

if (import.meta.main) {
  const release = await packageAgent();
  console.log(`release: ${release.dir}\n         ${release.tarball}\n         ${release.deb}`);
}
