"""``python -m lab.kubeadm``: the EMULATED kubeadm (:mod:`lab.kubeadm.cli`)."""

import sys

from lab.kubeadm.cli import main

sys.exit(main())
