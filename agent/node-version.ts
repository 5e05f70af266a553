/**
 * The oldest Node the agent runs on, and the check of it. Node 22.15 is the first with what the agent
 * needs from node:crypto (ML-KEM's encapsulate/decapsulate, for post-quantum recipients) and
 * node:zlib (zstd). package.json's `engines.node` says the same (a test holds them equal).
 *
 * This module must parse and run on any Node still in use (Debian 12 ships 18), so it uses nothing
 * newer than plain ES2020.
 */
export const MIN_NODE_VERSION = '22.15';

/** Where a host without a new enough Node gets one, or the release that brings its own. */
const INSTALL_HINT =
  'install the self-contained release (pgkeep-VERSION-linux-ARCH.tar.gz or the .deb, which carry their own Node), or Node >= 22.15 from https://nodejs.org';

/** Why Node `version` (e.g. "20.19.2") cannot run the agent, or undefined when it can. */
export function nodeVersionProblem(version: string): string | undefined {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  const [needMajor = 0, needMinor = 0] = MIN_NODE_VERSION.split('.').map(Number);
  if (major > needMajor || (major === needMajor && minor >= needMinor)) return undefined;
  return `needs Node >= ${MIN_NODE_VERSION}, found v${version}; ${INSTALL_HINT}`;
}
