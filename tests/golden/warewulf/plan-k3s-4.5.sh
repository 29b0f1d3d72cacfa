#!/bin/sh
# ek8s warewulf plan: cluster ek8s, Warewulf 4.5, 5 nodes.
# Idempotent: nodes and profiles that exist are only set, never added again.
set -e

# the share on the Warewulf server: root-only, as the agents keep every file in it
install -d -m 0700 -o root -g root /share

# cluster profile for ek8s
wwctl profile add ek8s-ek8s --yes

# cluster-wide facts for node.yaml.ww (tags ek8s_*)
wwctl profile set ek8s-ek8s \
    --yes \
    --tagadd ek8s_cluster=ek8s \
    --tagadd ek8s_share=/share \
    --tagadd ek8s_vip=10.0.0.99 \
    --tagadd ek8s_vip_prefix=24 \
    --tagadd ek8s_vip_hostname=vip.kubernetes.local \
    --tagadd ek8s_vip_port=8443 \
    --tagadd ek8s_vrid=51 \
    --tagadd ek8s_distribution=k3s \
    --tagadd ek8s_k8s_version=v1.36.4 \
    --tagadd ek8s_pod_subnet=10.249.0.0/16 \
    --tagadd ek8s_service_subnet=10.96.0.0/12 \
    --tagadd ek8s_on_cluster_lost=reinit

# new control node
wwctl node add control0

# control 10.0.0.21 (52:54:00:00:00:21), root on tmpfs
wwctl node set control0 \
    --yes \
    --profile default,ek8s-ek8s \
    --container ek8s-k3s \
    --root tmpfs \
    --netname default \
    --netdev net0 \
    --hwaddr 52:54:00:00:00:21 \
    --ipaddr 10.0.0.21 \
    --netmask 255.255.255.0 \
    --nettagadd DNS1=1.1.1.1 \
    --tagadd ek8s_role=control \
    --wwinit wwinit,ek8s,ek8s-hosts \
    --runtime generic,ek8s-hosts

# new control node
wwctl node add control1

# control 10.0.0.22 (52:54:00:00:00:22), root on tmpfs
wwctl node set control1 \
    --yes \
    --profile default,ek8s-ek8s \
    --container ek8s-k3s \
    --root tmpfs \
    --netname default \
    --netdev net0 \
    --hwaddr 52:54:00:00:00:22 \
    --ipaddr 10.0.0.22 \
    --netmask 255.255.255.0 \
    --nettagadd DNS1=1.1.1.1 \
    --tagadd ek8s_role=control \
    --wwinit wwinit,ek8s,ek8s-hosts \
    --runtime generic,ek8s-hosts

# new control node
wwctl node add control2

# control 10.0.0.23 (52:54:00:00:00:23), root on tmpfs
wwctl node set control2 \
    --yes \
    --profile default,ek8s-ek8s \
    --container ek8s-k3s \
    --root tmpfs \
    --netname default \
    --netdev net0 \
    --hwaddr 52:54:00:00:00:23 \
    --ipaddr 10.0.0.23 \
    --netmask 255.255.255.0 \
    --nettagadd DNS1=1.1.1.1 \
    --tagadd ek8s_role=control \
    --wwinit wwinit,ek8s,ek8s-hosts \
    --runtime generic,ek8s-hosts

# new worker node
wwctl node add worker0

# worker 10.0.0.41 (52:54:00:00:00:41), root on tmpfs
wwctl node set worker0 \
    --yes \
    --profile default,ek8s-ek8s \
    --container ek8s-k3s \
    --root tmpfs \
    --netname default \
    --netdev net0 \
    --hwaddr 52:54:00:00:00:41 \
    --ipaddr 10.0.0.41 \
    --netmask 255.255.255.0 \
    --nettagadd DNS1=1.1.1.1 \
    --tagadd ek8s_role=worker \
    --wwinit wwinit,ek8s,ek8s-hosts \
    --runtime generic,ek8s-hosts

# new worker node
wwctl node add worker1

# worker 10.0.0.42 (52:54:00:00:00:42), root on tmpfs
wwctl node set worker1 \
    --yes \
    --profile default,ek8s-ek8s \
    --container ek8s-k3s \
    --root tmpfs \
    --netname default \
    --netdev net0 \
    --hwaddr 52:54:00:00:00:42 \
    --ipaddr 10.0.0.42 \
    --netmask 255.255.255.0 \
    --nettagadd DNS1=1.1.1.1 \
    --tagadd ek8s_role=worker \
    --wwinit wwinit,ek8s,ek8s-hosts \
    --runtime generic,ek8s-hosts

# DHCP, NFS exports and hosts on the server
wwctl configure --all

# render node.yaml and the units for every node
wwctl overlay build

# /etc/warewulf/warewulf.conf needs (ek8s warewulf apply merges it):
#   nfs:
#     enabled: true
#     export paths:
#     - path: /share
#       export options: rw,sync,no_root_squash,no_subtree_check
#       mount options: defaults,hard,lookupcache=positive
#       mount: true
