# services.pgkeep: encrypted, replicated, verified PostgreSQL backups on NixOS.
#
# - the agent as a hardened service (the sandbox of `pgkeep systemd-unit`, from ./hardening.nix);
# - pgkeep.yaml generated from these options; secrets only by path (the identity file, and AWS
#   credentials passed with LoadCredential=), never in the Nix store;
# - archive_command wired into services.postgresql.settings when WAL archiving is on;
# - timers for logical and base backups;
# - a provider for selfhostblocks' databasebackup contract: services.pgkeep.databases.<name>
#   takes the contract's `request` and reports its `result` (a backup service and a restore script).
#
# Usage and a side-by-side example: docs/nixos.md. VM test: ./test.nix.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.pgkeep;
  inherit (lib)
    concatMapStringsSep
    escapeShellArg
    getExe
    literalExpression
    mapAttrs'
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    nameValuePair
    optional
    optionalAttrs
    types
    ;

  yaml = pkgs.formats.yaml { };
  pgkeep = getExe cfg.package;
  spoolDir = "/var/lib/pgkeep/spool";

  configFile = yaml.generate "pgkeep.yaml" (
    {
      inherit (cfg) cluster repository recipients;
      inherit spoolDir;
      databases = cfg.logical.databases;
    }
    // optionalAttrs (cfg.identityFile != null) { inherit (cfg) identityFile; }
    // cfg.settings
  );

  # Every pgkeep process gets the same configuration and, when given, the AWS credentials as a
  # systemd credential: readable only by that service, never in the unit or the store.
  environment = {
    PGKEEP_CONFIG = "${configFile}";
    PGKEEP_SPOOL_DIR = spoolDir;
  }
  // optionalAttrs (cfg.awsCredentialsFile != null) {
    AWS_SHARED_CREDENTIALS_FILE = "%d/pgkeep-aws-credentials";
  };
  loadCredential = optional (
    cfg.awsCredentialsFile != null
  ) "pgkeep-aws-credentials:${cfg.awsCredentialsFile}";

  sandbox =
    import ./hardening.nix
    // {
      StateDirectory = "pgkeep";
      StateDirectoryMode = "0700";
      ReadWritePaths = [ "/var/lib/pgkeep" ] ++ cfg.writablePaths;
      LoadCredential = loadCredential;
    };

  oneshot = user: command: {
    after = [
      "network-online.target"
      "postgresql.service"
    ];
    wants = [ "network-online.target" ];
    inherit environment;
    serviceConfig = sandbox // {
      Type = "oneshot";
      User = user;
      Group = user;
      ExecStart = command;
    };
  };

  timer = description: startAt: {
    inherit description;
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnCalendar = startAt;
      Persistent = true;
      RandomizedDelaySec = "5m";
    };
  };

  postgresUser = config.services.postgresql.superUser or "postgres";
  isPostQuantum = r: lib.hasPrefix "age1pq1" r;

  # The restore script of one stream: the contract's interface ("snapshots", "restore latest|ID"),
  # printed by `pgkeep stream restore-script` so its logic has one home; run as root it drops to
  # the request's user, whose restoreCmd it feeds.
  restoreScript =
    name: request:
    let
      generated = pkgs.runCommand "pgkeep-restore-${name}-inner" { } ''
        ${pgkeep} --config ${configFile} stream restore-script --name ${escapeShellArg name} \
          --pgkeep ${pgkeep} -- ${pkgs.bash}/bin/sh -c ${escapeShellArg request.restoreCmd} > $out
        chmod +x $out
      '';
    in
    pkgs.writeShellScriptBin "pgkeep-restore-${name}" ''
      ${concatMapStringsSep "\n" (n: "export ${n}=${escapeShellArg environment.${n}}") (
        lib.filter (n: n != "AWS_SHARED_CREDENTIALS_FILE") (lib.attrNames environment)
      )}
      ${lib.optionalString (
        cfg.awsCredentialsFile != null
      ) "export AWS_SHARED_CREDENTIALS_FILE=${escapeShellArg cfg.awsCredentialsFile}"}
      if [ "$(id -u)" = 0 ]; then
        exec ${pkgs.util-linux}/bin/runuser -u ${escapeShellArg request.user} -- ${generated} "$@"
      fi
      exec ${generated} "$@"
    '';

  streamOptions =
    { name, config, ... }:
    {
      options = {
        request = mkOption {
          description = "The databasebackup contract's request, as the service that has the dump provides it.";
          type = types.submodule {
            options = {
              user = mkOption {
                type = types.str;
                example = "postgres";
                description = "Unix user the backup and restore commands run as.";
              };
              backupName = mkOption {
                type = types.str;
                default = "dump";
                description = "Name of the dump, for people; the stream is stored under the attribute name.";
              };
              backupCmd = mkOption {
                type = types.str;
                example = literalExpression ''"''${pkgs.postgresql}/bin/pg_dumpall"'';
                description = "Shell command that writes the dump to stdout.";
              };
              restoreCmd = mkOption {
                type = types.str;
                example = literalExpression ''"''${pkgs.postgresql}/bin/psql postgres"'';
                description = "Shell command that reads a dump on stdin and restores it.";
              };
            };
          };
        };
        settings = {
          startAt = mkOption {
            type = types.str;
            default = "daily";
            example = "*-*-* 03:15:00";
            description = "When to back up (systemd.time OnCalendar).";
          };
        };
        result = mkOption {
          description = "The databasebackup contract's result.";
          readOnly = true;
          type = types.submodule {
            options = {
              restoreScript = mkOption {
                type = types.str;
                description = "Program with `snapshots` and `restore latest|ID`.";
              };
              backupService = mkOption {
                type = types.str;
                description = "Unit that takes a backup now (`systemctl start`).";
              };
            };
          };
          default = {
            restoreScript = "pgkeep-restore-${name}";
            backupService = "pgkeep-stream-${name}.service";
          };
          defaultText = literalExpression ''
            {
              restoreScript = "pgkeep-restore-<name>";
              backupService = "pgkeep-stream-<name>.service";
            }
          '';
        };
      };
    };
in
{
  options.services.pgkeep = {
    enable = mkEnableOption "pgkeep, encrypted backups of PostgreSQL (and any command's output) to S3-compatible storage";

    package = mkOption {
      type = types.package;
      description = "The pgkeep agent (./package.nix: the built dist/ and Node.js 24).";
      example = literalExpression "pkgs.callPackage ./deploy/nixos/package.nix { dist = ./dist; }";
    };

    cluster = mkOption {
      type = types.strMatching "[a-z0-9][a-z0-9-]{0,62}";
      example = "db1";
      description = "Name of this host's cluster in the repository (objects go under v1/<cluster>/).";
    };

    repository = mkOption {
      type = types.str;
      example = "s3://pgkeep-ingest/hosts?region=eu-west-1";
      description = "Where backups go: s3://BUCKET/PREFIX?endpoint=…&region=… or file:///path.";
    };

    recipients = mkOption {
      type = types.nonEmptyListOf types.str;
      example = [ "age1pq1…" ];
      description = ''
        age recipients (public keys) every object is encrypted to: all post-quantum (age1pq1…) or
        all X25519 (age1…). Make one with `pgkeep keygen` on another machine; the host never holds
        an identity unless it restores.
      '';
    };

    identityFile = mkOption {
      type = types.nullOr (types.strMatching "/.*");
      default = null;
      example = "/run/secrets/pgkeep-identity";
      description = "Absolute path of the age identity file, for restores only. A path string, so it never enters the Nix store.";
    };

    awsCredentialsFile = mkOption {
      type = types.nullOr (types.strMatching "/.*");
      default = null;
      example = "/run/secrets/pgkeep-aws";
      description = "AWS shared credentials file for an s3:// repository, passed to every pgkeep service with LoadCredential=.";
    };

    writablePaths = mkOption {
      type = types.listOf (types.strMatching "/.*");
      default = [ ];
      example = [ "/mnt/backup/pgkeep" ];
      description = "Directories the sandboxed services may write besides /var/lib/pgkeep: a file:// repository.";
    };

    settings = mkOption {
      inherit (yaml) type;
      default = { };
      example = {
        wal.pushParallelism = 2;
        zstdLevel = 3;
      };
      description = "Further options of pgkeep.yaml (see pgkeep.example.yaml), merged over the generated ones.";
    };

    walArchiving.enable = mkEnableOption "WAL archiving: archive_command runs `pgkeep wal-push`, and the agent pushes ahead";

    agent.enable = mkOption {
      type = types.bool;
      default = cfg.walArchiving.enable;
      defaultText = literalExpression "config.services.pgkeep.walArchiving.enable";
      description = "Run `pgkeep agent` (WAL push-ahead and metrics) as a hardened service.";
    };

    logical = {
      enable = mkEnableOption "scheduled logical backups (pg_dump of each database, pg_dumpall --globals-only)";
      databases = mkOption {
        type = types.either (types.enum [ "all" ]) (types.listOf types.str);
        default = "all";
        example = [ "shop" ];
        description = "Databases to dump, or all that allow connections.";
      };
      startAt = mkOption {
        type = types.str;
        default = "hourly";
        description = "When (systemd.time OnCalendar).";
      };
    };

    base = {
      enable = mkEnableOption "scheduled base backups (pg_basebackup), the start of point-in-time recovery";
      startAt = mkOption {
        type = types.str;
        default = "weekly";
        description = "When (systemd.time OnCalendar).";
      };
    };

    databases = mkOption {
      type = types.attrsOf (types.submodule streamOptions);
      default = { };
      example = literalExpression ''
        {
          nextcloud.request = config.shb.nextcloud.databasebackup;
        }
      '';
      description = ''
        Stream backups, one per attribute: a provider of selfhostblocks' databasebackup contract.
        Each request's backupCmd is backed up by `pgkeep stream backup` on a timer, and its
        result names the backup service and a restore script.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = lib.all isPostQuantum cfg.recipients || !(lib.any isPostQuantum cfg.recipients);
          message = "services.pgkeep.recipients mixes post-quantum (age1pq1…) and classic (age1…) recipients: one classic recipient would open every object to harvest-now-decrypt-later; use one kind";
        }
        {
          assertion = lib.all (name: builtins.match "[A-Za-z0-9][A-Za-z0-9._-]{0,99}" name != null) (
            lib.attrNames cfg.databases
          );
          message = "services.pgkeep.databases: each name must be 1-100 letters, digits, dots, dashes and underscores, starting with a letter or digit (it is part of the object key)";
        }
        {
          assertion = !cfg.walArchiving.enable || config.services.postgresql.enable;
          message = "services.pgkeep.walArchiving.enable needs services.postgresql.enable";
        }
        {
          assertion = !(cfg.logical.enable || cfg.base.enable) || config.services.postgresql.enable;
          message = "services.pgkeep.logical and .base back up the local PostgreSQL: enable services.postgresql";
        }
      ];
      environment.systemPackages = [
        cfg.package
      ]
      ++ lib.mapAttrsToList (name: stream: restoreScript name stream.request) cfg.databases;
      systemd.tmpfiles.rules = [ "d /var/lib/pgkeep 0700 ${postgresUser} ${postgresUser} -" ];
    }

    (mkIf cfg.walArchiving.enable {
      services.postgresql.settings = {
        archive_mode = "on";
        archive_command = "PGKEEP_CONFIG=${configFile} PGKEEP_SPOOL_DIR=${spoolDir} ${pgkeep} wal-push %p";
      };
      systemd.services.postgresql = {
        environment = optionalAttrs (cfg.awsCredentialsFile != null) {
          AWS_SHARED_CREDENTIALS_FILE = "%d/pgkeep-aws-credentials";
        };
        # archive_command writes the spool (markers of pushed segments) from PostgreSQL's sandbox.
        serviceConfig = {
          LoadCredential = loadCredential;
          ReadWritePaths = [ "/var/lib/pgkeep" ];
        };
      };
    })

    (mkIf cfg.agent.enable {
      systemd.services.pgkeep-agent = {
        description = "pgkeep agent: WAL push-ahead, metrics";
        wantedBy = [ "multi-user.target" ];
        after = [
          "network-online.target"
          "postgresql.service"
        ];
        wants = [ "network-online.target" ];
        environment = environment // {
          PGDATA = config.services.postgresql.dataDir;
        };
        serviceConfig = sandbox // {
          Type = "simple";
          User = postgresUser;
          Group = postgresUser;
          ExecStart = "${pgkeep} agent";
          Restart = "on-failure";
          RestartSec = "5s";
          KillSignal = "SIGTERM";
          TimeoutStopSec = 120;
        };
      };
    })

    (mkIf cfg.logical.enable {
      systemd.services.pgkeep-logical = oneshot postgresUser (
        pkgs.writeShellScript "pgkeep-logical" (
          if cfg.logical.databases == "all" then
            "exec ${pgkeep} backup --all"
          else
            "exec ${pgkeep} backup ${concatMapStringsSep " " (db: "--db ${escapeShellArg db}") cfg.logical.databases}"
        )
      );
      systemd.timers.pgkeep-logical = timer "pgkeep logical backup" cfg.logical.startAt;
    })

    (mkIf cfg.base.enable {
      systemd.services.pgkeep-base = oneshot postgresUser "${pgkeep} basebackup";
      systemd.timers.pgkeep-base = timer "pgkeep base backup" cfg.base.startAt;
    })

    {
      systemd.services = mapAttrs' (
        name: stream:
        nameValuePair "pgkeep-stream-${name}" (
          # A script, not an ExecStart line: systemd's quoting is not the shell's.
          oneshot stream.request.user (
            pkgs.writeShellScript "pgkeep-stream-${name}" ''
              exec ${pgkeep} stream backup --name ${escapeShellArg name} -- ${pkgs.bash}/bin/sh -c ${escapeShellArg stream.request.backupCmd}
            ''
          )
        )
      ) cfg.databases;
      systemd.timers = mapAttrs' (
        name: stream: nameValuePair "pgkeep-stream-${name}" (timer "pgkeep stream backup ${name}" stream.settings.startAt)
      ) cfg.databases;
    }
  ]);
}
