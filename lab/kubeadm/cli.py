"""EMULATED kubeadm's command line (lab only): exactly the subset the driver calls, each with
``--rootfs`` (the lab prefixes every node path with it; kubeadm chroots there):

* ``kubeadm init --config F --upload-certs [--ignore-preflight-errors C,...]``
  (:mod:`lab.kubeadm.init`);
* ``kubeadm join --config F [--skip-phases P,...] [--ignore-preflight-errors C,...]``
  (:mod:`lab.kubeadm.join`);
* ``kubeadm reset -f [--skip-phases P,...]`` (:mod:`lab.kubeadm.reset`);
* ``kubeadm token create --config F`` (or ``TOKEN --ttl D``) and ``kubeadm init phase
  upload-certs --upload-certs --config F [--skip-certificate-key-print]`` (or
  ``--certificate-key KEY``), through the control-plane endpoint with the node's admin.conf;
  ``--config`` mixed with ``--ttl`` or ``--certificate-key`` is refused as kubeadm's
  ``ValidateMixedArguments`` refuses it. Every run records its command line
  (:func:`lab.emulation.record_cmdline`).

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
from lab import emulation
from lab.kubeadm import certs, config, init, join, reset
from lab.kubeadm.workflow import TIMINGS, KubeadmError, say, with_etcd_errors
from lab.nodekit import Root, ToolError


def mixed_with_config(given: dict[str, object]) -> None:
    """kubeadm's ``ValidateMixedArguments`` (``cmd/kubeadm/app/apis/kubeadm/validation``):
    with ``--config``, only ``--config``, ``--ignore-preflight-errors``, ``--dry-run``,
    ``--kubeconfig``, ``--node-name``, ``--kubeconfig-dir``, ``--upload-certs``,
    ``--print-join-command``, ``--rootfs``, ``--v``, ``--log-file`` and ``--skip-*`` flags may
    be given. ``given`` maps the flags given (set, not None) to their values. Raises
    :class:`KubeadmError` ``can not mix '--config' with arguments [...]``."""
    if given.get("config") is None:
        return
    mixed = sorted(k for k, v in given.items() if v is not None and k not in ("config", "rootfs", "upload-certs"))
    mixed = [k for k in mixed if not k.startswith("skip-")]
    if mixed:
        raise KubeadmError(f"can not mix '--config' with arguments [{' '.join(mixed)}]")


def token_create(
    r: Root, version: versions.KubernetesVersion, token: str | None, ttl: str | None, cfg: str | None
) -> None:
    """``kubeadm token create [TOKEN] [--ttl D]`` or ``kubeadm token create --config F``:
    with ``--config`` the token and its TTL are the InitConfiguration's first
    ``bootstrapTokens`` entry (``cmd/kubeadm/app/cmd/token.go``, ``RunCreateToken`` loads the
    file and creates its tokens; a TOKEN argument is then ignored, as there). Prints the token,
    as kubeadm does."""
    mixed_with_config({"config": cfg, "ttl": ttl})
    if cfg is not None:
        ic = config.load_docs(r(cfg), version).get("InitConfiguration")
        tokens = (ic or {}).get("bootstrapTokens") or []
        if not tokens or not tokens[0].get("token"):
            raise KubeadmError(f"{cfg}: the InitConfiguration names no bootstrap token")
        token, ttl = str(tokens[0]["token"]), str(tokens[0].get("ttl") or "24h0m0s")
    if token is None:
        raise KubeadmError("the emulated kubeadm does not generate tokens: give TOKEN or --config")
    certs.create_token(reset.admin_api(r), token, ttl or "24h0m0s")
    print(token, flush=True)


def upload_certs(
    r: Root, version: versions.KubernetesVersion, certificate_key: str | None, cfg: str | None, skip_print: bool
) -> None:
    """``kubeadm init phase upload-certs --upload-certs --certificate-key KEY`` or ``...
    --config F``: the key is the InitConfiguration's ``certificateKey`` then
    (``initData.CertificateKey`` returns ``cfg.CertificateKey``). Prints the key
    (``[upload-certs] Using certificate key:``) unless ``--skip-certificate-key-print``, as
    the phase does (``cmd/phases/init/uploadcerts.go``)."""
    mixed_with_config({"config": cfg, "certificate-key": certificate_key})
    if cfg is not None:
        ic = config.load_docs(r(cfg), version).get("InitConfiguration") or {}
        certificate_key = ic.get("certificateKey")
    if not certificate_key:
        raise KubeadmError(
            "the emulated kubeadm does not generate certificate keys: give --certificate-key or --config"
        )
    if not re.fullmatch(r"[0-9a-f]{64}", certificate_key):
        raise KubeadmError("the certificate key must be 32 bytes, hex-encoded (64 characters)")
    certs.upload_certificates(r, reset.admin_api(r), certificate_key)
    if not skip_print:
        say(f"[upload-certs] Using certificate key:\n{certificate_key}")


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
            sp.add_argument("--skip-certificate-key-print", action="store_true")
            sp.add_argument("phase", nargs="*", help="'phase upload-certs' only")
    sp = sub.add_parser("reset")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("--rootfs", default=None)
    sp.add_argument("--skip-phases", default="")
    sp = sub.add_parser("token")
    sp.add_argument("action", choices=["create"])
    sp.add_argument("token", nargs="?", default=None)
    sp.add_argument("--ttl", default=None)
    sp.add_argument("--config", default=None)
    sp.add_argument("--rootfs", default=None)
    return p


def _names(csv: str) -> frozenset[str]:
    return frozenset(s for s in csv.split(",") if s)


def main(argv: list[str] | None = None) -> int:
    """The ``kubeadm`` shim's entry (see the module). Returns 0, or 1 after printing kubeadm's
    error for a :class:`KubeadmError` (a phase's, wrapped with its name), ``OSError``,
    ``KeyError`` or :class:`core.etcd.EtcdError`; records the phases' seconds either way
    (:class:`lab.kubeadm.workflow.Timings`). argparse exits 2 on bad arguments."""
    emulation.record_cmdline("kubeadm")
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
            token_create(r, version, args.token, args.ttl, args.config)
        elif args.cmd == "init" and args.phase:
            if args.phase != ["phase", "upload-certs"] or not args.upload_certs:
                raise KubeadmError(
                    "the emulation supports 'init phase upload-certs --upload-certs --config F "
                    "[--skip-certificate-key-print]' (or --certificate-key KEY)"
                )
            upload_certs(r, version, args.certificate_key, args.config, args.skip_certificate_key_print)
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
    except with_etcd_errors(ToolError, OSError, KeyError) as err:
        message = str(err) if isinstance(err, KubeadmError) else f"error execution phase {command}: {err}"
        prefix = versions.kubeadm_error_prefix(version)
        print(f"{prefix}{message}", file=sys.stderr, flush=True)
        print("To see the stack trace of this error execute with --v=5 or higher", file=sys.stderr, flush=True)
        TIMINGS.save(command, ok=False)
        return 1
    TIMINGS.save(command, ok=True)
    return 0
