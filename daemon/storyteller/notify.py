"""systemd's notification protocol (sd_notify): READY=1, STATUS=..., WATCHDOG=1.

Through systemd-python's systemd.daemon.notify when it is installed; else the datagram is
sent to $NOTIFY_SOCKET directly (the protocol is one datagram of "KEY=VALUE" lines; a name
starting with "@" is in the abstract namespace). Without $NOTIFY_SOCKET (not started by
systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Sends `message` ("READY=1\\nSTATUS=listening"); True when it was sent."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    try:
        from systemd import daemon  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return _send(address, message)
    return bool(daemon.notify(message))


def _send(address: str, message: str) -> bool:
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(message.encode("utf-8"), target)
        except OSError:
            return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when there is no
    watchdog for this process."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
