"""Phylactery: keeps HAProxy/keepalived in line with the control plane and prunes stale nodes."""
