// `node scripts/prerequisites.ts test|demo|bench`: the programs `npm test`, `npm run demo` and
// `npm run bench` need from the system, checked before anything runs. Missing ones are installed
// with apt-get when this runs as root on Debian/Ubuntu; otherwise it stops with one message naming
// every missing program and the command that installs them, so that no run fails deep inside a
// test on "age: not found".
import { execFileSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { PG_BIN } from '../test/support/pg-cluster.ts';

export type Purpose = 'test' | 'demo' | 'bench';

interface Prerequisite {
  /** The program's name as the message shows it. */
  readonly program: string;
  /** Its absolute path, or undefined when it is not there. */
  readonly find: (env: NodeJS.ProcessEnv) => string | undefined;
  readonly why: string;
  /** Debian/Ubuntu package, and RHEL/Fedora package, that bring it. */
  readonly apt: string;
  readonly dnf: string;
  readonly purposes: readonly Purpose[];
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `name` on env.PATH, as the tests' child processes would find it. */
function onPath(name: string): (env: NodeJS.ProcessEnv) => string | undefined {
  return (env) =>
    (env.PATH ?? '')
      .split(delimiter)
      .filter(Boolean)
      .map((dir) => join(dir, name))
      .find(executable);
}

/** A PostgreSQL program in PG_BIN, where the tests and the demo run them from. */
function inPgBin(name: string): () => string | undefined {
  return () => {
    const path = join(PG_BIN, name);
    return executable(path) ? path : undefined;
  };
}

const ALL: readonly Purpose[] = ['test', 'demo', 'bench'];

const PREREQUISITES: readonly Prerequisite[] = [
  ...['initdb', 'postgres', 'pg_ctl'].map((program) => ({
    program,
    find: inPgBin(program),
    why: `PostgreSQL's server, in ${PG_BIN} (set PG_BIN for another major version)`,
    apt: 'postgresql',
    dnf: 'postgresql-server',
    purposes: ALL,
  })),
  ...['psql', 'pg_dump', 'pg_dumpall', 'pg_restore', 'pg_basebackup'].map((program) => ({
    program,
    find: inPgBin(program),
    why: `PostgreSQL's client programs, in ${PG_BIN}`,
    apt: 'postgresql',
    dnf: 'postgresql',
    purposes: ALL,
  })),
  {
    program: 'age',
    find: onPath('age'),
    why: 'the reference age CLI: tests prove that stored objects decrypt without pgkeep',
    apt: 'age',
    dnf: 'age',
    purposes: ['test'],
  },
  {
    program: 'zstd',
    find: onPath('zstd'),
    why: 'the agent compresses streams with it, and tests decompress by hand',
    apt: 'zstd',
    dnf: 'zstd',
    purposes: ALL,
  },
  {
    program: 'faketime',
    find: onPath('faketime'),
    why: 'a test runs the agent with its clock a day ahead and a day behind (libfaketime)',
    apt: 'faketime',
    dnf: 'libfaketime',
    purposes: ['test'],
  },
  {
    program: 'systemd-analyze',
    find: onPath('systemd-analyze'),
    why: 'a test verifies the generated service unit with it',
    apt: 'systemd',
    dnf: 'systemd',
    purposes: ['test'],
  },
  {
    program: 'nix-instantiate',
    find: onPath('nix-instantiate'),
    why: 'a test parse-checks the NixOS module (deploy/nixos) with nix-instantiate --parse',
    apt: 'nix-bin',
    dnf: 'nix',
    purposes: ['test'],
  },
  {
    program: 'dpkg-deb',
    find: onPath('dpkg-deb'),
    why: 'the build packs the agent release as a .deb',
    apt: 'dpkg',
    dnf: 'dpkg',
    purposes: ALL,
  },
  {
    program: 'pgbackrest',
    find: onPath('pgbackrest'),
    why: 'the WAL benchmark measures pgBackRest beside pgkeep',
    apt: 'pgbackrest',
    dnf: 'pgbackrest',
    purposes: ['bench'],
  },
  {
    program: 'time (GNU)',
    find: () => (executable('/usr/bin/time') ? '/usr/bin/time' : undefined),
    why: "the logical-backup benchmark reads peak memory from GNU time's -f %M",
    apt: 'time',
    dnf: 'time',
    purposes: ['bench'],
  },
];

/** The prerequisites of `purpose` that are not there. */
export function missingPrerequisites(purpose: Purpose, env: NodeJS.ProcessEnv = process.env): Prerequisite[] {
  return PREREQUISITES.filter((p) => p.purposes.includes(purpose) && p.find(env) === undefined);
}

/**
 * Why `program` (as the check names it: "age", "pg_restore", "systemd-analyze") is missing and
 * how to install it, or undefined when it is there; for tests that use it to fail saying so.
 */
export function prerequisiteProblem(
  program: string,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const prerequisite = PREREQUISITES.find((p) => p.program === program);
  if (!prerequisite)
    throw new Error(`${program} is no prerequisite: add it to PREREQUISITES in scripts/prerequisites.ts`);
  if (prerequisite.find(env) !== undefined) return undefined;
  return `${program} is missing (${prerequisite.why}); install it with: ${installCommand([prerequisite])}`;
}

type OsFamily = 'debian' | 'rhel' | 'other';

function osFamily(): OsFamily {
  let release = '';
  try {
    release = readFileSync('/etc/os-release', 'utf8');
  } catch {}
  const ids = /^(ID|ID_LIKE)=(.*)$/gm;
  const words = [...release.matchAll(ids)].flatMap((m) => (m[2] ?? '').replace(/"/g, '').split(/\s+/));
  if (words.some((w) => w === 'debian' || w === 'ubuntu')) return 'debian';
  if (words.some((w) => ['rhel', 'fedora', 'centos'].includes(w))) return 'rhel';
  return 'other';
}

function uniquePackages(missing: readonly Prerequisite[], kind: 'apt' | 'dnf'): string[] {
  return [...new Set(missing.map((p) => p[kind]))];
}

/** The command that installs `missing` on this machine's OS family. */
export function installCommand(missing: readonly Prerequisite[], family: OsFamily = osFamily()): string {
  if (family === 'rhel')
    return `dnf install -y ${uniquePackages(missing, 'dnf').join(' ')}   (as root; age and pgbackrest come from EPEL)`;
  const apt = `apt-get update && apt-get install -y ${uniquePackages(missing, 'apt').join(' ')}`;
  return family === 'debian'
    ? `${apt}   (as root)`
    : `${apt}   (as root, on Debian/Ubuntu; other systems: the same programs from their packages)`;
}

/**
 * Makes sure every prerequisite of `purpose` is there: installs what is missing with apt-get when
 * root on Debian/Ubuntu, and otherwise throws one error naming every missing program and the fix.
 */
export function ensurePrerequisites(purpose: Purpose, env: NodeJS.ProcessEnv = process.env): void {
  let missing = missingPrerequisites(purpose, env);
  if (missing.length === 0) return;
  if (process.getuid?.() === 0 && osFamily() === 'debian' && onPath('apt-get')(env)) {
    const packages = uniquePackages(missing, 'apt');
    console.error(
      `prerequisites: installing ${packages.join(' ')} with apt-get (missing: ${missing.map((p) => p.program).join(', ')})`,
    );
    const aptEnv = { ...env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update', '-qq'], { env: aptEnv, stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], {
      env: aptEnv,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    missing = missingPrerequisites(purpose, env);
    if (missing.length === 0) return;
  }
  throw new Error(
    `npm ${purpose === 'test' ? 'test' : `run ${purpose}`} needs programs this machine lacks:\n${missing
      .map((p) => `  ${p.program}: ${p.why}`)
      .join('\n')}\ninstall them with: ${installCommand(missing)}`,
  );
}

if (import.meta.main) {
  const purpose = process.argv[2];
  if (purpose !== 'test' && purpose !== 'demo' && purpose !== 'bench') {
    console.error('usage: node scripts/prerequisites.ts test|demo|bench');
    process.exit(2);
  }
  try {
    ensurePrerequisites(purpose);
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
}
