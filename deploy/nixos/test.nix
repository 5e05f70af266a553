# NixOS VM test of services.pgkeep: PostgreSQL with WAL archiving, a local MinIO as the repository,
# a databasebackup stream (pg_dump of one database) backed up, the database dropped, restored with
# the contract's restore script, and compared. Needs a machine with Nix and KVM:
#
#   npm run build
#   nix-build deploy/nixos/test.nix --arg dist ./dist
#
# The key pair below is a throwaway made for this test only; never use it for real backups.
{
  pkgs ? import <nixpkgs> { },
  dist,
}:
let
  identity = "AGE-SECRET-KEY-1LK2YGC0JLV6P6EH6NEA3WZX8PLQ32WHFVUURKAC0ZUFEG77NXYHQ0UTHLM";
  recipient = "age1ad73j2na00j9vwma8xxtw8f7vgc666pqw6d53c0qntk6dusucqasm8lsml";
in
pkgs.testers.runNixOSTest {
  name = "pgkeep";
  nodes.machine =
    { config, pkgs, ... }:
    {
      imports = [ ./module.nix ];
      virtualisation.memorySize = 2048;
      services.postgresql = {
        enable = true;
        ensureDatabases = [ "shop" ];
      };
      services.minio = {
        enable = true;
        listenAddress = "127.0.0.1:9000";
        rootCredentialsFile = pkgs.writeText "minio-credentials" ''
          MINIO_ROOT_USER=pgkeeptest
          MINIO_ROOT_PASSWORD=pgkeeptest-secret
        '';
      };
      environment.etc."pgkeep-test/aws".text = ''
        [default]
        aws_access_key_id = pgkeeptest
        aws_secret_access_key = pgkeeptest-secret
      '';
      environment.etc."pgkeep-test/identity" = {
        text = identity;
        mode = "0440";
        group = "postgres";
      };
      environment.systemPackages = [ pkgs.minio-client ];
      services.pgkeep = {
        enable = true;
        package = pkgs.callPackage ./package.nix { inherit dist; };
        cluster = "machine";
        repository = "s3://pgkeep/hosts?endpoint=http://127.0.0.1:9000&path-style=true&region=us-east-1";
        recipients = [ recipient ];
        identityFile = "/etc/pgkeep-test/identity";
        awsCredentialsFile = "/etc/pgkeep-test/aws";
        walArchiving.enable = true;
        databases.shop.request = {
          user = "postgres";
          backupCmd = "${config.services.postgresql.package}/bin/pg_dump shop";
          restoreCmd = "${config.services.postgresql.package}/bin/psql --set ON_ERROR_STOP=1 shop";
        };
      };
    };
  testScript = ''
    machine.wait_for_unit("minio.service")
    machine.wait_for_open_port(9000)
    machine.succeed("mc alias set local http://127.0.0.1:9000 pgkeeptest pgkeeptest-secret && mc mb local/pgkeep")
    machine.wait_for_unit("postgresql.service")
    machine.succeed("runuser -u postgres -- psql shop -c 'create table t(x int); insert into t values (42)'")

    # WAL archiving through the module's archive_command reaches the repository.
    machine.succeed("runuser -u postgres -- psql -c 'select pg_switch_wal()'")
    machine.wait_until_succeeds("mc ls --recursive local/pgkeep/hosts/v1/machine/wal/ | grep -q .zst.age", timeout=60)

    machine.succeed("systemctl start pgkeep-stream-shop.service")
    machine.succeed("pgkeep-restore-shop snapshots | grep -E '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4} '")
    machine.succeed("runuser -u postgres -- psql -c 'drop database shop' -c 'create database shop'")
    machine.succeed("pgkeep-restore-shop restore latest")
    assert machine.succeed("runuser -u postgres -- psql -tA shop -c 'select x from t'").strip() == "42"
  '';
}
