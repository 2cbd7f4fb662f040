"""The monitor under a service manager: systemd's notify protocol (``sd_notify(3)``), spoken
directly (one datagram per message on a Unix socket), so no libsystemd binding is needed.

Under a unit with ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; the monitor then says
``READY=1`` once its model is warm and its sources are open (``systemctl start`` returns then, and
a source that cannot start fails the start instead of looking started), ``STATUS=`` every few
seconds (``systemctl status`` shows the streams, alarms and windows per second), and
``STOPPING=1`` when it stops. With ``WatchdogSec=`` (``WATCHDOG_USEC``) it says ``WATCHDOG=1``
only while the monitor works (``Pipeline.alive``): a monitor whose engine stopped turning is
restarted by systemd instead of running on without labels. Without ``NOTIFY_SOCKET`` nothing
of this runs. docs/service.md has a unit file.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping, MutableMapping

from drsn_stream.view import Snapshot

STATUS_EVERY_S = 5.0


class Notifier:
    """Sends notify messages to the service manager; a message that cannot be sent (the manager
    gone, the socket full) is counted, never raised: monitoring goes on."""

    def __init__(self, address: str, watchdog_s: float | None = None) -> None:
        # "@name" is Linux's abstract namespace; a path otherwise
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = watchdog_s
        self.failures = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for, or None. Takes ``NOTIFY_SOCKET`` and the watchdog's
        variables out of ``env`` (``os.environ``), as ``sd_notify``'s ``unset_environment`` does:
        the engine and ingest processes the monitor starts are not the service's main process."""
        env = os.environ if env is None else env
        address = env.pop("NOTIFY_SOCKET", "")
        usec, pid = env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
        if not address or address[0] not in "/@":
            return None  # unset, or a kind of address (vsock) this protocol's users do not give a monitor
        watchdog_s = None
        try:
            if usec and (not pid or int(pid) == os.getpid()) and int(usec) > 0:
                watchdog_s = int(usec) / 1e6
        except ValueError:
            watchdog_s = None
        return cls(address, watchdog_s)

    def send(self, fields: Mapping[str, str]) -> bool:
        """One message of ``KEY=value`` lines; whether it was sent."""
        message = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items()).encode("utf-8", "replace")
        try:
            self._sock.sendto(message, self.address)
            return True
        except OSError:
            self.failures += 1
            return False

    def ready(self, status: str) -> None:
        self.send({"READY": "1", "STATUS": status})

    def watch(self, alive: Callable[[float], bool], status: Callable[[], str]) -> Notifier:
        """Starts a thread that says ``status()`` every STATUS_EVERY_S and, with a watchdog, says
        ``WATCHDOG=1`` twice per watchdog interval while ``alive(interval)`` holds."""
        every = STATUS_EVERY_S if self.watchdog_s is None else min(STATUS_EVERY_S, self.watchdog_s / 2)

        def loop() -> None:
            while not self._stop.wait(every):
                fields: dict[str, str] = {}
                try:
                    fields["STATUS"] = status()
                    if self.watchdog_s is not None and alive(self.watchdog_s):
                        fields["WATCHDOG"] = "1"
                except Exception:  # noqa: BLE001 - a status that cannot be made is no ping, never a crash
                    pass
                if fields:
                    self.send(fields)

        self._thread = threading.Thread(target=loop, name="drsn-notify", daemon=True)
        self._thread.start()
        return self

    def stopping(self, status: str = "stopping") -> None:
        """Ends the thread and says the service stops (its summary is being written)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.send({"STOPPING": "1", "STATUS": status})

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


def status_line(snapshot: Snapshot) -> str:
    """``256 streams: 1 DANGER, 2 ALERT, 0 CHECK SENSOR; 5,980 windows/s; 0 dropped``, and what the
    dashboard's header says beside it: what ``systemctl status`` shows."""
    counts, footer = snapshot.level_counts(), snapshot.footer
    line = (f"{len(snapshot.rows)} streams: {counts['DANGER']} DANGER, {counts['ALERT']} ALERT, "
            f"{counts['CHECK_SENSOR']} CHECK SENSOR; {footer.windows_per_s:,.0f} windows/s; {footer.dropped:,} dropped")
    said = snapshot.header.status  # what the dashboard's header says: an engine that hangs, an error, a learning
    return f"{line}; {said[:160]}" if said else line


__all__ = ["Notifier", "status_line"]
