"""Encrypted ZeroMQ links (CURVE): `drsn-stream keys`, a gateway (`publish --curve-key`) read by a
monitor that holds its public key, an allow list, the results feed; and what a monitor with a
wrong key, or none, is told. Real sockets on loopback, a real `publish` process."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from helpers import NoteSink, curve_reader

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.errors import ConfigError
from drsn_stream.sources import make_source
from drsn_stream.sources.curve import available, make_keys

pytestmark = pytest.mark.skipif(not available(), reason="this libzmq has no CURVE")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    make_keys(str(folder), ["gw", "mon", "stranger"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "mon.key").write_bytes((folder / "mon.key").read_bytes())
    return folder


def _publisher(port: int, keys: Path, *extra: str, key: str = "gw", stderr: Any = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "drsn_stream", "publish", "--source", "sim?machines=2", "--to",
                             f"tcp://127.0.0.1:{port}", "--curve-key", str(keys / f"{key}.key_secret"), "--duration",
                             "120", "--quiet", *extra], cwd=ROOT, env=env, stderr=stderr)


class _Reading:
    """A monitor of ``spec`` running in the background: its frames so far, its notes."""

    def __init__(self, spec: str) -> None:
        self.pipe = Pipeline(RunConfig(sources=(spec,), engine_process=False))
        self.notes = NoteSink()
        self.pipe.outputs.add(self.notes)
        self.pipe.start()

    @property
    def frames(self) -> int:
        return self.pipe.sources[0].stats.frames

    def until(self, ok: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not ok() and time.monotonic() < deadline:
            self.pipe.wait(duration=0.2)
        return bool(ok())

    def said(self, text: str) -> list[str]:
        return [n for n in self.notes.lines if text in n]

    def stop(self) -> None:
        self.pipe.stop()


def _monitor(spec: str, seconds: float) -> tuple[int, str, list[str]]:
    """(frames received, the header's status line, notes) of a monitor of ``spec`` that ran until
    its first frames or ``seconds``."""
    reading = _Reading(spec)
    try:
        reading.until(lambda: reading.frames >= 20, seconds)
        return reading.frames, reading.pipe.snapshot().header.status, reading.notes.lines
    finally:
        reading.stop()


def test_keys_are_pairs_whose_secret_only_its_owner_reads_and_are_never_overwritten(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "drsn_stream", "keys", "gw1", "--dir", str(tmp_path)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    public, secret = zmq.auth.load_certificate(str(tmp_path / "gw1.key_secret"))
    assert zmq.auth.load_certificate(str(tmp_path / "gw1.key")) == (public, None)
    assert stat.S_IMODE((tmp_path / "gw1.key_secret").stat().st_mode) == 0o600
    assert zmq.curve_public(secret) == public
    again = subprocess.run([sys.executable, "-m", "drsn_stream", "keys", "gw1", "--dir", str(tmp_path)], cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists; remove the pair first" in again.stderr
    assert zmq.auth.load_certificate(str(tmp_path / "gw1.key_secret")) == (public, secret)  # untouched


@pytest.mark.slow
def test_an_encrypted_gateway_is_read_with_its_key_and_refuses_a_wrong_one_or_plain_text(
        keys: Path, free_tcp_port: int) -> None:
    pub = _publisher(free_tcp_port, keys)
    base = f"zmq://127.0.0.1:{free_tcp_port}"
    try:
        frames, _, _ = _monitor(f"{base}?curve_server={keys / 'gw.key'}", 60)
        assert frames >= 20, "nothing read over the encrypted link"
        frames, status, notes = _monitor(f"{base}?curve_server={keys / 'stranger.key'}", 4)
        assert frames == 0
        assert "the CURVE handshake failed: curve_server= is not the publisher's public key" in status, status
        said = [n for n in notes if n.startswith(f"tcp://127.0.0.1:{free_tcp_port}: the CURVE handshake failed")]
        assert len(said) == 1, notes  # said once, however often it connects again
        frames, status, _ = _monitor(base, 4)  # no key at all: told that the publisher may be encrypted
        assert frames == 0 and "an encrypted one (CURVE: give curve_server=NAME.key)" in status, status
    finally:
        pub.kill()
        pub.wait()


@pytest.mark.slow
def test_a_gateways_allow_list_lets_in_only_the_readers_it_holds(keys: Path, free_tcp_port: int) -> None:
    pub = _publisher(free_tcp_port, keys, "--curve-allow", str(keys.parent / "allowed"))
    base = f"zmq://127.0.0.1:{free_tcp_port}?curve_server={keys / 'gw.key'}"
    try:
        frames, _, _ = _monitor(f"{base}&curve_key={keys / 'mon.key_secret'}", 60)
        assert frames >= 20, "the allowed reader read nothing"
        frames, status, _ = _monitor(f"{base}&curve_key={keys / 'stranger.key_secret'}", 4)
        assert frames == 0 and "does not allow the key of curve_key=" in status, status
        frames, status, _ = _monitor(base, 4)  # a key made for the run: not on the list
        assert frames == 0 and "keeps an allow list: give curve_key=" in status, status
    finally:
        pub.kill()
        pub.wait()


def test_a_binding_reader_is_the_server_and_a_connecting_gateway_its_client(keys: Path, free_tcp_port: int) -> None:
    from drsn_stream.sources.curve import Curve
    from drsn_stream.sources.publish import publish

    src = make_source(f"zmq+bind://127.0.0.1:{free_tcp_port}?curve_key={keys / 'mon.key_secret'}&until_eos=1")
    frames: list = []
    with src:
        reading = threading.Thread(target=lambda: frames.extend(src), daemon=True)
        reading.start()  # the source binds as it starts reading
        curve = Curve(key=None, server=str(keys / "mon.key"))
        # it waits for the reader's subscription, which comes only over a handshake that worked
        summary = publish(["sim?machines=1"], f"tcp://127.0.0.1:{free_tcp_port}", connect=True, duration=1.5,
                          wait_subscriber=30, curve=curve)
        reading.join(30)
    assert not reading.is_alive(), "the reader never got the end of the stream"
    sent = summary["streams"]["sim/m0"]["frames"]
    assert sent > 10 and [f.seq for f in frames] == list(range(sent))


def test_the_results_feed_is_encrypted_for_the_readers_that_hold_its_key(keys: Path, free_tcp_port: int) -> None:
    from drsn_stream.sinks.jsonl import ZmqResultSink

    sink = ZmqResultSink(f"tcp://127.0.0.1:{free_tcp_port}", curve_key=str(keys / "mon.key_secret"))
    good, wrong = curve_reader(free_tcp_port, keys / "mon.key"), curve_reader(free_tcp_port, keys / "gw.key")
    try:
        got: list[list[bytes]] = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:  # a PUB sends only once the handshake is done
            sink.write({"type": "alarm", "stream": "pump", "time": 1.0, "to": "ALERT"})
            if good.poll(100):
                got.append(good.recv_multipart())
        assert got and got[0][0] == b"alarm/pump"
        assert not wrong.poll(500), "a reader with the wrong key received the feed"
    finally:
        good.close(0)
        wrong.close(0)
        sink.close()


@pytest.mark.parametrize("spec, said", [
    ("zmq://127.0.0.1:5555?curve_key={k}/mon.key_secret", "needs the publisher's public key: curve_server="),
    ("zmq+bind://127.0.0.1:5555?curve_server={k}/gw.key", "a binding reader is CURVE's server"),
    ("zmq://127.0.0.1:5555?curve_server={k}/none.key", "no key file"),
    ("zmq://127.0.0.1:5555?curve_server={k}/gw.key&curve_key={k}/mon.key", "holds only a public key"),
    ("zmq+bind://127.0.0.1:5555?curve_key={k}/mon.key_secret&curve_allow={k}/none", "is no folder"),
])
def test_a_key_option_that_cannot_work_is_refused_before_the_monitor_starts(keys: Path, spec: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace("?", r"\?")):
        make_source(spec.format(k=keys))


@pytest.mark.parametrize("flags, said", [
    (["--publish-curve-key", "{k}/mon.key_secret"], "give --publish tcp://HOST:PORT too"),
    (["--publish", "tcp://127.0.0.1:5560", "--publish-curve-allow", "{k}"], "needs publish_curve_key"),
])
def test_a_feed_key_without_its_feed_is_refused_before_the_monitor_starts(keys: Path, flags: list[str],
                                                                         said: str) -> None:
    import argparse

    from drsn_stream.app.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ConfigError, match=said):
        config_from_args(parser.parse_args(["--source", "sim", *[f.format(k=keys) for f in flags]]))


def test_cluster_mode_takes_the_gateways_key_options_and_checks_them_before_ray_starts(
        keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drsn_stream.cluster.cli import check_here, gateway_of
    from drsn_stream.cluster.ray_app import ClusterConfig

    monkeypatch.chdir(keys.parent)  # relative paths: every host reads the same absolute ones on its node
    gateway, options = gateway_of(("zmq://gw:5555?curve_server=keys/gw.key&curve_key=keys/mon.key_secret&hwm=500",))
    assert gateway == "gw:5555"
    assert dict(options) == {"curve_server": str(keys / "gw.key"), "curve_key": str(keys / "mon.key_secret"),
                             "hwm": "500"}
    check_here(ClusterConfig(gateway=gateway, checkpoint_dir=str(tmp_path), gateway_options=options,
                             publish="tcp://127.0.0.1:5560", publish_curve_key=str(keys / "mon.key_secret")))
    for spec, said in [("zmq://gw:5555?curve_server=keys/none.key", "no key file"),
                       ("zmq://gw:5555?curve_key=keys/mon.key_secret", "needs the publisher's public key")]:
        gateway, options = gateway_of((spec,))
        with pytest.raises(ConfigError, match=said):
            check_here(ClusterConfig(gateway=gateway, checkpoint_dir=str(tmp_path), gateway_options=options))
    with pytest.raises(ConfigError, match="is no folder"):
        check_here(ClusterConfig(gateway="gw:5555", checkpoint_dir=str(tmp_path), publish="tcp://127.0.0.1:5560",
                                 publish_curve_key=str(keys / "mon.key_secret"), publish_curve_allow="nowhere"))
    with pytest.raises(ConfigError, match="the cluster's hosts connect to the gateways"):
        gateway_of(("zmq://gw:5555?curve_allow=keys",))


@pytest.mark.slow
def test_a_cluster_host_and_the_discovery_read_an_encrypted_gateway_that_keeps_an_allow_list(
        keys: Path, tmp_path: Path, free_tcp_port: int) -> None:
    """What each node of a cluster does with the gateway's key options: the coordinator's
    discovery hears the streams, a host gets their windows; a host whose key the gateway does
    not allow gets nothing and says why in what it sends to the aggregator."""
    from drsn_stream.cluster.cli import gateway_of
    from drsn_stream.cluster.coordinator import gateway_socket, listen_for_streams
    from drsn_stream.cluster.host import HostWorker
    from drsn_stream.cluster.ray_app import ClusterConfig

    pub = _publisher(free_tcp_port, keys, "--curve-allow", str(keys.parent / "allowed"))
    base = f"zmq://127.0.0.1:{free_tcp_port}?curve_server={keys / 'gw.key'}"
    hosts = []
    try:
        gateway, options = gateway_of((f"{base}&curve_key={keys / 'mon.key_secret'}",))
        cluster = ClusterConfig(gateway=gateway, checkpoint_dir=str(tmp_path / "ck"), gateway_options=options)
        heard: set[str] = set()
        deadline = time.monotonic() + 60
        while len(heard) < 2 and time.monotonic() < deadline:
            sock = gateway_socket(gateway, cluster.gateway_curve())
            try:
                heard |= listen_for_streams(sock, 1.0, heard, 100, {})[0]
            finally:
                sock.close(0)
        assert heard == {"sim/m0", "sim/m1"}
        sent: dict[str, list] = {"good": [], "stranger": []}
        for name, key in (("good", "mon"), ("stranger", "stranger")):
            _, options = gateway_of((f"{base}&curve_key={keys / (key + '.key_secret')}",))
            host = HostWorker(name, RunConfig(engine_process=False, threads=1), gateway=gateway,
                              checkpoint_dir=str(tmp_path / name), gateway_options=dict(options),
                              send=lambda kind, payload, got=sent[name]: got.append((kind, payload)),
                              summary_every_s=0.2).start()
            hosts.append(host)
            host.assign(sorted(heard), previous={})
        deadline = time.monotonic() + 60
        while hosts[0].source.stats.frames < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hosts[0].source.stats.frames >= 20, "the allowed host read nothing"
        time.sleep(1.0)
        assert hosts[1].source.stats.frames == 0
        summaries = [p for k, p in sent["stranger"] if k == "summary"]
        assert summaries and "does not allow the key of curve_key=" in str(summaries[-1]), summaries[-1:]
    finally:
        for host in hosts:
            host.stop()
        pub.kill()
        pub.wait()


def test_the_gateway_counts_the_readers_that_fail_its_handshake(keys: Path, free_tcp_port: int) -> None:
    from drsn_stream.sources.curve import Curve
    from drsn_stream.sources.publish import publish

    result: dict = {}
    sender = threading.Thread(target=lambda: result.update(publish(
        ["sim?machines=1"], f"tcp://127.0.0.1:{free_tcp_port}", duration=4.0,
        curve=Curve(key=str(keys / "gw.key_secret")))), daemon=True)
    sender.start()
    readers = [curve_reader(free_tcp_port, key) for key in (None, keys / "stranger.key")]  # plain text; the wrong key
    try:
        sender.join(60)
        assert not sender.is_alive()
        assert not any(r.poll(0) for r in readers)  # neither read a message
    finally:
        for r in readers:
            r.close(0)
    assert result["receivers"] == 0 and result["handshake_failures"] >= 2, result


@pytest.mark.slow
def test_a_readers_key_added_to_the_allow_list_lets_it_in_without_restarting_the_gateway(
        keys: Path, tmp_path: Path, free_tcp_port: int) -> None:
    allowed = keys.parent / "allowed"  # mon.key only
    log = tmp_path / "gateway.err"
    with open(log, "w") as err:
        pub = _publisher(free_tcp_port, keys, "--curve-allow", str(allowed), stderr=err)
    base = f"zmq://127.0.0.1:{free_tcp_port}?curve_server={keys / 'gw.key'}"
    stranger = _Reading(f"{base}&curve_key={keys / 'stranger.key_secret'}")
    try:
        assert stranger.until(lambda: stranger.said("the CURVE handshake failed"), 60), stranger.notes.lines
        assert stranger.frames == 0
        shutil.copy(keys / "stranger.key", allowed / "stranger.key")  # the gateway's operator lets it in
        assert stranger.until(lambda: stranger.frames >= 20, 30), "not let in after its key was added"
        assert "loaded again: 2 readers' keys (were 1)" in log.read_text()
        (allowed / "mon.key").unlink()  # and takes another's out: refused at its next handshake
        deadline = time.monotonic() + 20
        while "loaded again: 1 readers' keys (were 2)" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        frames, status, _ = _monitor(f"{base}&curve_key={keys / 'mon.key_secret'}", 4)
        assert frames == 0 and "does not allow the key of curve_key=" in status, status
    finally:
        stranger.stop()
        pub.kill()
        pub.wait()


@pytest.mark.slow
def test_a_reader_follows_a_gateway_given_a_new_key_pair_when_its_public_key_file_is_replaced(
        keys: Path, tmp_path: Path, free_tcp_port: int) -> None:
    make_keys(str(keys), ["gw2"])
    held = tmp_path / "gateway.key"  # the reader's copy of the gateway's public key
    shutil.copy(keys / "gw.key", held)
    pub = _publisher(free_tcp_port, keys)
    reader = _Reading(f"zmq://127.0.0.1:{free_tcp_port}?curve_server={held}")
    try:
        assert reader.until(lambda: reader.frames >= 20, 60), "nothing read with the first key"
        pub.kill()
        pub.wait()
        pub = _publisher(free_tcp_port, keys, key="gw2")  # the gateway's key pair rotated
        assert reader.until(lambda: reader.said("the CURVE handshake failed"), 60), reader.notes.lines
        before = reader.frames
        shutil.copy(keys / "gw2.key", held)  # its new public key handed out, the reader left running
        assert reader.until(lambda: reader.frames >= before + 20, 40), "the new key was not taken up"
        assert len(reader.said(f"curve_server= ({held}) changed on disk: connecting with the new key")) == 1
        pub.kill()
        pub.wait()
        pub = _publisher(free_tcp_port, keys)  # back to the first pair: failing again is said again
        assert reader.until(lambda: len(reader.said("the CURVE handshake failed")) == 2, 60), reader.notes.lines
    finally:
        reader.stop()
        pub.kill()
        pub.wait()
