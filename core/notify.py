"""Telling systemd how a node program is doing: ``READY=1``, ``STATUS=``, ``WATCHDOG=1`` and
``STOPPING=1`` of the service notification protocol (sd_notify(3)), sent through the
``sdnotify`` library, for units with ``Type=notify`` (``ek8s-node.service``,
``phylactery.service``; docs/architecture.md "systemd and journald").

systemd passes the socket in ``NOTIFY_SOCKET`` and, with ``WatchdogSec=``, the period in
``WATCHDOG_USEC`` for the process ``WATCHDOG_PID`` (sd_watchdog_enabled(3)): a service must
send ``WATCHDOG=1`` more often than that, or systemd kills it with ``WatchdogSignal=`` (SIGABRT)
and restarts it (``Restart=on-failure`` covers watchdog timeouts, systemd.service(5)). The
variables are removed from this process's environment once read (sd_notify's
``unset_environment``), so the commands the node runs (``kubeadm``, ``k3s server
--cluster-reset``, which itself speaks the protocol) cannot notify in our name.

Outside systemd (a terminal, the lab's process mode, unit tests) every call does nothing.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import sdnotify

STATUS_MAX = 400  # characters of STATUS= kept: `systemctl status` shows one line of it


class ServiceNotifier:
    """The notification socket of this process, if systemd gave it one. ``environ`` is read
    (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID``) and those keys are removed from it.

    ``watchdog_s`` is the unit's ``WatchdogSec=`` in seconds, None when there is no watchdog
    for this process (no ``WATCHDOG_USEC``, or ``WATCHDOG_PID`` names another process).
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        socket_path = env.pop("NOTIFY_SOCKET", "")
        usec = env.pop("WATCHDOG_USEC", "")
        pid = env.pop("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._notifier: sdnotify.SystemdNotifier | None = None
        if socket_path:
            # sdnotify reads the socket's address from the environment when it connects.
            saved = os.environ.get("NOTIFY_SOCKET")
            os.environ["NOTIFY_SOCKET"] = socket_path
            try:
                self._notifier = sdnotify.SystemdNotifier()
            finally:
                if saved is None:
                    os.environ.pop("NOTIFY_SOCKET", None)
                else:
                    os.environ["NOTIFY_SOCKET"] = saved
            if self._notifier.socket is None:  # sdnotify swallows a failed connect
                self._notifier = None

    @property
    def enabled(self) -> bool:
        """Whether messages reach systemd (a notification socket was given and connects)."""
        return self._notifier is not None

    @property
    def ping_every_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half the watchdog period (sd_watchdog_enabled(3)
        advises sending it at half of it), None without a watchdog."""
        return self.watchdog_s / 2 if self.watchdog_s else None

    def _send(self, *fields: str) -> None:
        if self._notifier is not None:
            # sdnotify encodes as latin-1 and drops what it cannot send; keep every message.
            text = "\n".join(fields).encode("latin-1", "replace").decode("latin-1")
            self._notifier.notify(text)

    @staticmethod
    def _status(text: str) -> str:
        line = " ".join(text.split())
        return "STATUS=" + (line if len(line) <= STATUS_MAX else line[: STATUS_MAX - 3] + "...")

    def ready(self, status: str) -> None:
        """``READY=1`` with ``STATUS=<status>``: start-up is done (``systemctl start`` returns)."""
        self._send("READY=1", self._status(status))

    def status(self, text: str) -> None:
        """``STATUS=<text>`` (one line, at most :data:`STATUS_MAX` characters): what
        ``systemctl status`` prints as ``Status:`` and ``systemctl show -p StatusText``."""
        self._send(self._status(text))

    def watchdog(self) -> None:
        """``WATCHDOG=1``: alive; nothing without a watchdog."""
        if self.watchdog_s:
            self._send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        """``STOPPING=1`` with ``STATUS=<status>``: shutting down (the watchdog no longer counts)."""
        self._send("STOPPING=1", self._status(status))
