#!/usr/bin/env bash
# Rebuild the cluster from nothing, as the proof of concept's script of the same name did:
# start a new generation on the share and reboot every node through Warewulf.
# Usage: scripts/rebuild-and-restart.sh [--cluster NAME] [--share PATH] [other `ek8s reset` options]
set -euo pipefail
exec ek8s reset --reboot "$@"
