"""EMULATED kubeadm's command line (lab only): exactly the subset the driver calls, each with
``--rootfs`` (the lab prefixes every node path with it; kubeadm chroots there):

* ``kubeadm init --config F --upload-certs [--ignore-preflight-errors C,...]``
  (:mod:`lab.kubeadm.init`);
* ``kubeadm join --config F [--skip-phases P,...] [--ignore-preflight-errors C,...]``
  (:mod:`lab.kubeadm.join`);
* ``kubeadm reset -f [--skip-phases P,...]`` (:mod:`lab.kubeadm.reset`);
* ``kubeadm token create TOKEN --ttl D`` and ``kubeadm init phase upload-certs --upload-certs
  --certificate-key KEY``, through the control-plane endpoint with the node's admin.conf.

The emulated kubeadm's version is the lab's (``$EK8S_EMULATION`` ``kubernetes_version``,
:mod:`core.versions` for what it changes). A failed command prints kubeadm's error on stderr
(``error execution phase <phase>: <message>``, from 1.34 on after ``error: ``,
:func:`core.versions.kubeadm_error_prefix`), then "To see the stack trace of this error
execute with --v=5 or higher", and exits 1 (kubeadm's exit code for every error: its
preflight code 2 is lost in the phase runner's wrapping, kubernetes#132080).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from core import versions
from core.etcd import EtcdError
from lab import emulation
from lab.kubeadm import certs, config, init, join, reset
from lab.kubeadm.workflow import TIMINGS, KubeadmError
from lab.nodekit import Root, ToolError


def token_create(r: Root, token: str, ttl: str) -> None:
    """``kubeadm token create TOKEN --ttl D``."""
    certs.create_token(reset.admin_api(r), token, ttl)
    print(token, flush=True)


def upload_certs(r: Root, certificate_key: str) -> None:
    """``kubeadm init phase upload-certs --upload-certs --certificate-key KEY``."""
    if not re.fullmatch(r"[0-9a-f]{64}", certificate_key):
        raise KubeadmError("the certificate key must be 32 bytes, hex-encoded (64 characters)")
    certs.upload_certificates(r, reset.admin_api(r), certificate_key)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeadm", description="EMULATED kubeadm (ephemeral-k8s lab only)")
    p.add_argument("--rootfs", default=None)
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("init", "join"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--config")
        sp.add_argument("--rootfs", default=None)
        sp.add_argument("--ignore-preflight-errors", default="")
        sp.add_argument("--skip-phases", default="")
        if cmd == "init":
            sp.add_argument("--upload-certs", action="store_true")
            sp.add_argument("--certificate-key", default=None)
            sp.add_argument("phase", nargs="*", help="'phase upload-certs' only")
    sp = sub.add_parser("reset")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("--rootfs", default=None)
    sp.add_argument("--skip-phases", default="")
    sp = sub.add_parser("token")
    sp.add_argument("action", choices=["create"])
    sp.add_argument("token")
    sp.add_argument("--ttl", default="24h0m0s")
    sp.add_argument("--rootfs", default=None)
    return p


def _names(csv: str) -> frozenset[str]:
    return frozenset(s for s in csv.split(",") if s)


def main(argv: list[str] | None = None) -> int:
    """The ``kubeadm`` shim's entry (see the module). Returns 0, or 1 after printing kubeadm's
    error for a :class:`KubeadmError` (a phase's, wrapped with its name), ``OSError``,
    ``KeyError`` or :class:`core.etcd.EtcdError`; records the phases' seconds either way
    (:class:`lab.kubeadm.workflow.Timings`). argparse exits 2 on bad arguments."""
    args = _parser().parse_args(argv)
    r = Root(args.rootfs)
    os.umask(0o077)
    emu = emulation.load()
    version = versions.parse(emu.kubernetes_version)
    command = "upload-certs" if args.cmd == "init" and args.phase else args.cmd
    try:
        if args.cmd == "reset":
            if not args.force:
                raise KubeadmError("the emulated kubeadm only supports non-interactive 'reset -f'")
            reset.reset(r, version, _names(args.skip_phases))
        elif args.cmd == "token":
            token_create(r, args.token, args.ttl)
        elif args.cmd == "init" and args.phase:
            if args.phase != ["phase", "upload-certs"] or not args.upload_certs or not args.certificate_key:
                raise KubeadmError(
                    "the emulation supports 'init phase upload-certs --upload-certs --certificate-key KEY'"
                )
            upload_certs(r, args.certificate_key)
        else:
            if not args.config:
                raise KubeadmError("--config is required")
            docs = config.load_docs(r(args.config), version)
            if args.cmd == "init":
                ic, cc = docs["InitConfiguration"], docs["ClusterConfiguration"]
                ignored = config.ignored_preflight_errors(args.ignore_preflight_errors, ic)
                data = init.InitData(r, emu, version, ic, cc, args.upload_certs, ignored)
                init.init(data, _names(args.skip_phases))
            else:
                jc = docs["JoinConfiguration"]
                ignored = config.ignored_preflight_errors(args.ignore_preflight_errors, jc)
                join.join(join.JoinData(r, emu, version, jc, ignored), _names(args.skip_phases))
    except (ToolError, OSError, KeyError, EtcdError) as err:
        message = str(err) if isinstance(err, KubeadmError) else f"error execution phase {command}: {err}"
        prefix = versions.kubeadm_error_prefix(version)
        print(f"{prefix}{message}", file=sys.stderr, flush=True)
        print("To see the stack trace of this error execute with --v=5 or higher", file=sys.stderr, flush=True)
        TIMINGS.save(command, ok=False)
        return 1
    TIMINGS.save(command, ok=True)
    return 0
