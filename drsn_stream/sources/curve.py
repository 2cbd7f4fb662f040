"""ZeroMQ CURVE on the sensor links: encrypted, and the publisher known to its readers (and, with
an allow list, the readers known to the publisher).

CURVE (ZeroMQ's elliptic-curve security, RFC 26) has a server side and a client side, whichever
side binds or connects. Here the side that binds is the server: a gateway (``drsn-stream
publish``) binding its PUB socket, or a monitor reading ``zmq+bind://``. Each side holds a key
pair in ZeroMQ's certificate files (``NAME.key`` public, ``NAME.key_secret`` both halves; made by
``drsn-stream keys NAME``):

- the server: its own ``.key_secret``; with an allow list (a folder of clients' ``.key`` files)
  it takes only those clients, without one any client that knows its public key;
- a client: the server's public ``.key``, and its own ``.key_secret`` where the server keeps an
  allow list (without one, a key pair made for the run).

A client holding a wrong server key, or a key the server does not allow, fails the handshake:
nothing is received, and the source says so (``Connections``), never taking plain text.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable
from typing import Any

import zmq
import zmq.auth

from drsn_stream.errors import ConfigError

KEYS_HINT = "make key pairs with `drsn-stream keys NAME`"
ALLOW_RELOAD_S = 2.0  # how often an allow list's folder is looked at for keys added or removed


def available() -> bool:
    """Whether this libzmq was built with CURVE (libsodium or its own tweetnacl)."""
    return bool(zmq.has("curve"))


def _need_curve(what: str) -> None:
    if not available():
        raise ConfigError(f"{what}: this ZeroMQ library has no CURVE security (libzmq built without "
                          "libsodium); install pyzmq's wheel (`pip install --force-reinstall pyzmq`)")


def _load(path: str, what: str, missing: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a certificate file, or a ConfigError saying what to give."""
    _need_curve(what)
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: no key file {path!r}; {missing}")
    try:
        return zmq.auth.load_certificate(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: {path!r} is not a ZeroMQ certificate file ({exc}); {KEYS_HINT}") from None


def load_secret(path: str, what: str) -> tuple[bytes, bytes]:
    """(public, secret) of a ``.key_secret`` certificate file."""
    public, secret = _load(path, what, f"{KEYS_HINT} (it writes NAME.key and NAME.key_secret)")
    if not secret:
        raise ConfigError(f"{what}: {path!r} holds only a public key; give the .key_secret file of the pair")
    return public, secret


def load_public(path: str, what: str) -> bytes:
    """The public key of a ``.key`` (or ``.key_secret``) certificate file."""
    return _load(path, what, f"give the other side's public NAME.key ({KEYS_HINT})")[0]


def check_allow(folder: str, what: str) -> dict[bytes, bool]:
    """The public keys (Z85) of the allow list ``folder``, or a ConfigError saying what is wrong
    with it (no folder, no ``NAME.key`` file, a file that is no key)."""
    if not os.path.isdir(folder):
        raise ConfigError(f"{what}: {folder!r} is no folder; give a folder of the allowed clients' NAME.key files")
    if not any(name.endswith(".key") for name in os.listdir(folder)):
        raise ConfigError(f"{what}: {folder!r} holds no NAME.key file: no client could connect")
    try:
        return zmq.auth.load_certificates(folder)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: the allow list {folder!r} holds a file that is no public key ({exc}); "
                          f"{KEYS_HINT}") from None


def _stamp(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (inode, size, mtime), or None where it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _folder_stamp(folder: str) -> tuple[tuple[str, tuple[int, int, int] | None], ...] | None:
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".key"))
    except OSError:
        return None
    return tuple((n, _stamp(os.path.join(folder, n))) for n in names)


class AllowList:
    """A server's allow list: ZeroMQ's authenticator (ZAP) for the socket's context, holding the
    public keys of the ``NAME.key`` files in ``folder``, and a thread that loads them again when
    the folder changes (looked at every ``ALLOW_RELOAD_S``): a reader's key added is let in at its
    next connection attempt, one removed is refused at its next handshake (a connection it has
    stays until it reconnects), without restarting the gateway. A folder whose files cannot all
    be read keeps the keys loaded before, and says so.

    ``on_change(message)``, where given, hears each reload and each refusal to reload.

    The authenticator asks ``callback`` about each client's key, so the keys it lets in are the
    ones this object read and counted, swapped in one assignment on a reload."""

    def __init__(self, ctx: zmq.Context, folder: str, what: str,
                 on_change: Callable[[str], None] | None = None) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.folder, self.what, self.on_change = folder, what, on_change
        self._stamp = _folder_stamp(folder)
        self._allowed = check_allow(folder, what)
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="drsn-curve-allow", daemon=True)
        self._thread.start()

    @property
    def keys(self) -> int:
        return len(self._allowed)

    def callback(self, domain: str, key: bytes) -> bool:
        """The authenticator's question (its thread): is this client's key (Z85) on the list?"""
        return key in self._allowed

    def _watch(self) -> None:
        while not self._stop.wait(ALLOW_RELOAD_S):
            stamp = _folder_stamp(self.folder)
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            before = self.keys
            try:
                self._allowed = check_allow(self.folder, self.what)
            except ConfigError as exc:
                self._say(f"{exc}: the {before} keys loaded before still hold")
                continue
            self._say(f"{self.what}: allow list {self.folder!r} loaded again: {self.keys} readers' keys "
                      f"(were {before}); a connection of a key removed stays until it reconnects")

    def _say(self, message: str) -> None:
        if self.on_change is not None:
            self.on_change(message)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.auth.stop()


class Curve:
    """One socket's CURVE settings, checked when made (a missing or wrong file is a ConfigError
    before any socket exists).

    Args:
        key: this side's ``.key_secret`` (a server's is required; a client's where the server
            keeps an allow list).
        server: the server's public ``.key``: set on a client, never on a server.
        allow: a server's folder of allowed clients' ``.key`` files (None: any client), loaded
            again when it changes (``AllowList``).
        what: the option's name, for messages.
        on_change: hears what changed while the socket is open (an allow list loaded again).

    A client's files are read again by ``refresh`` when they change: a gateway given a new key
    pair is followed by the readers whose ``curve_server`` file was replaced, without a restart.
    """

    def __init__(self, *, key: str | None, server: str | None = None, allow: str | None = None,
                 what: str = "curve", on_change: Callable[[str], None] | None = None) -> None:
        self.what = what
        self.on_change = on_change
        self.server_path, self.key_path = server, key
        self.server_key = load_public(server, what) if server else None
        self.allow = allow
        if self.server_key is None:  # the server side
            if key is None:
                raise ConfigError(f"{what}: a binding socket is CURVE's server: give its own key "
                                  f"(NAME.key_secret); {KEYS_HINT}")
            if allow is not None:
                check_allow(allow, what)
        elif allow is not None:
            raise ConfigError(f"{what}: an allow list is the server's (the side that binds), not a client's")
        self.keys = load_secret(key, what) if key else None
        self._stamps = {p: _stamp(p) for p in (server, key) if p}

    @property
    def is_server(self) -> bool:
        return self.server_key is None

    def context(self) -> zmq.Context:
        """The context to make the socket in: a server with an allow list needs one of its own,
        whose authenticator (ZAP) checks only this socket's clients."""
        return zmq.Context() if self.is_server and self.allow is not None else zmq.Context.instance()

    def apply(self, sock: zmq.Socket) -> Any:
        """Sets CURVE on ``sock`` before it binds or connects. Returns what must be stopped with the
        socket (``close``: the allow list's ``AllowList``), or None."""
        if self.is_server:
            assert self.keys is not None
            sock.curve_secretkey = self.keys[1]
            sock.curve_publickey = self.keys[0]
            sock.curve_server = True
            if self.allow is None:
                return None
            return AllowList(sock.context, self.allow, self.what, self.on_change)
        public, secret = self.keys if self.keys is not None else zmq.curve_keypair()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = self.server_key
        return None

    def refresh(self) -> list[str]:
        """A client's key files read again where they changed since last read (replaced or
        rewritten); returns the options whose key changed. A file that cannot be read now (being
        copied, say) keeps the key read before, and is tried again at the next call."""
        if self.is_server:
            return []
        changed = []
        for path in (self.server_path, self.key_path):
            if not path:
                continue
            stamp = _stamp(path)
            if stamp == self._stamps.get(path):
                continue
            try:
                if path == self.server_path:
                    new_server = load_public(path, self.what)
                    if new_server != self.server_key:
                        self.server_key = new_server
                        changed.append("curve_server")
                else:
                    new_keys = load_secret(path, self.what)
                    if new_keys != self.keys:
                        self.keys = new_keys
                        changed.append("curve_key")
            except ConfigError:
                continue  # stamp not kept: read again next time
            self._stamps[path] = stamp
        return changed


def close(sock: zmq.Socket, guard: Any) -> None:
    """Closes ``sock`` (after its LINGER) and what ``Curve.apply`` started for it (its allow list, and
    its own context)."""
    ctx = sock.context
    sock.close()
    if guard is not None:
        guard.stop()
        if ctx is not zmq.Context.instance():
            ctx.term()


def make_keys(folder: str, names: list[str]) -> list[tuple[str, str]]:
    """``NAME.key`` and ``NAME.key_secret`` in ``folder`` per name (the secret readable by its owner
    only); an existing pair is never overwritten. Returns their paths."""
    _need_curve("drsn-stream keys")
    os.makedirs(folder, exist_ok=True)
    out = []
    for name in names:
        if not name or os.sep in name or name.startswith("."):
            raise ConfigError(f"{name!r} is no name for a key pair (letters, digits, - and _)")
        public, secret = (os.path.join(folder, f"{name}.key{end}") for end in ("", "_secret"))
        if os.path.exists(public) or os.path.exists(secret):
            raise ConfigError(f"{secret} exists; remove the pair first to make a new one "
                              "(every side holding its public key must then get the new one)")
        mask = os.umask(0o077)  # the secret is never readable by others, not even for a moment
        try:
            made_public, made_secret = zmq.auth.create_certificates(folder, name)
        finally:
            os.umask(mask)
        os.chmod(made_public, 0o644)
        out.append((made_public, made_secret))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="one key pair per name, e.g. gateway1 monitor")
    parser.add_argument("--dir", default="keys", help="folder to write NAME.key and NAME.key_secret to (default ./keys)")


def run(args: argparse.Namespace) -> int:
    for public, secret in make_keys(args.dir, list(args.names)):
        print(f"{secret}  (secret: stays on its host, readable by its owner only)")
        print(f"{public}  (public: give it to the other side)")
    print("a gateway: drsn-stream publish --curve-key NAME.key_secret; a monitor: "
          "--source 'zmq://HOST:PORT?curve_server=NAME.key' (docs/wire-format.md)")
    return 0
