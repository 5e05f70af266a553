# The pgkeep agent as a Nix package: the built dist/ (`npm run build`: pgkeep.mjs, wal-push.mjs and the chunks they
# load; it needs no node_modules at run time) and Node.js 24, which the agent needs (>= 22.15).
#
#   pgkeep = pkgs.callPackage ./deploy/nixos/package.nix { dist = ./dist; };
{
  lib,
  stdenvNoCC,
  makeWrapper,
  nodejs_24,
  zstd,
  # The output of `npm run build` in a checkout of pgkeep.
  dist,
  version ? "0.1.0",
}:
stdenvNoCC.mkDerivation {
  pname = "pgkeep";
  inherit version;
  src = dist;
  nativeBuildInputs = [ makeWrapper ];
  dontBuild = true;
  installPhase = ''
    runHook preInstall
    mkdir -p $out/lib/pgkeep $out/bin
    cp -r . $out/lib/pgkeep/
    # zstd on PATH: the agent compresses streams with the zstd program, ~1.7x faster than Node's.
    makeWrapper ${lib.getExe nodejs_24} $out/bin/pgkeep \
      --add-flags $out/lib/pgkeep/pgkeep.mjs \
      --prefix PATH : ${lib.makeBinPath [ zstd ]}
    runHook postInstall
  '';
  meta = {
    description = "Encrypted, replicated, verified PostgreSQL backups (the on-host agent)";
    license = lib.licenses.asl20;
    mainProgram = "pgkeep";
    platforms = lib.platforms.linux;
  };
}
