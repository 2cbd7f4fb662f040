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
from typing import Any

import zmq
import zmq.auth

from drsn_stream.errors import ConfigError

KEYS_HINT = "make key pairs with `drsn-stream keys NAME`"


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


def check_allow(folder: str, what: str) -> None:
    if not os.path.isdir(folder):
        raise ConfigError(f"{what}: {folder!r} is no folder; give a folder of the allowed clients' NAME.key files")
    if not any(name.endswith(".key") for name in os.listdir(folder)):
        raise ConfigError(f"{what}: {folder!r} holds no NAME.key file: no client could connect")


class Curve:
    """One socket's CURVE settings, checked when made (a missing or wrong file is a ConfigError
    before any socket exists).

    Args:
        key: this side's ``.key_secret`` (a server's is required; a client's where the server
            keeps an allow list).
        server: the server's public ``.key``: set on a client, never on a server.
        allow: a server's folder of allowed clients' ``.key`` files (None: any client).
        what: the option's name, for messages.
    """

    def __init__(self, *, key: str | None, server: str | None = None, allow: str | None = None,
                 what: str = "curve") -> None:
        self.what = what
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

    @property
    def is_server(self) -> bool:
        return self.server_key is None

    def context(self) -> zmq.Context:
        """The context to make the socket in: a server with an allow list needs one of its own,
        whose authenticator (ZAP) checks only this socket's clients."""
        return zmq.Context() if self.is_server and self.allow is not None else zmq.Context.instance()

    def apply(self, sock: zmq.Socket) -> Any:
        """Sets CURVE on ``sock`` before it binds or connects. Returns what must be stopped with the
        socket (``close``: the allow list's authenticator), or None."""
        if self.is_server:
            assert self.keys is not None
            sock.curve_secretkey = self.keys[1]
            sock.curve_publickey = self.keys[0]
            sock.curve_server = True
            if self.allow is None:
                return None
            from zmq.auth.thread import ThreadAuthenticator

            auth = ThreadAuthenticator(sock.context)
            auth.start()
            auth.configure_curve(domain="*", location=self.allow)
            return auth
        public, secret = self.keys if self.keys is not None else zmq.curve_keypair()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = self.server_key
        return None


def close(sock: zmq.Socket, guard: Any) -> None:
    """Closes ``sock`` (after its LINGER) and what ``Curve.apply`` started for it (and its own context)."""
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
