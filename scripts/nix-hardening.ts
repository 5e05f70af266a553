// Writes deploy/nixos/hardening.nix from the agent unit's hardening list (agent/systemd/unit.ts),
// so the NixOS module sandboxes pgkeep exactly as `pgkeep systemd-unit` does.
import { writeFileSync } from 'node:fs';
import { renderNixHardening } from '../agent/systemd/unit.ts';

writeFileSync(new URL('../deploy/nixos/hardening.nix', import.meta.url), renderNixHardening());
