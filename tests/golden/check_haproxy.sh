#!/bin/bash
# Rendered by Phylactery: keepalived track script (is the local HAProxy frontend up?)
exec 3<>/dev/tcp/127.0.0.1/8443
