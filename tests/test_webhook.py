"""``--webhook URL``: alarms and sensor-health changes posted as JSON to a real HTTP server on
loopback, and an endpoint that is down or refuses them shown and counted, never fatal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import WebhookEndpoint as Endpoint
from helpers import wait_until

from drsn_stream.errors import ConfigError, WriteError
from drsn_stream.sinks.webhook import WebhookSink

SECRET = Endpoint.SECRET

ROOT = Path(__file__).resolve().parents[1]


def _alarm(stream: str = "pump/m1", to: str = "ALERT") -> dict:
    return {"type": "alarm", "stream": stream, "time": 1.7e9, "from": "NORMAL", "to": to, "label": "inner_007",
            "confidence": 0.93}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _monitor_posting(tmp_path: Path, source: str, *flags: str) -> tuple[Endpoint, list[dict]]:
    """A 10-s monitor of ``source`` posting to a loopback endpoint: the endpoint (closed, its posts
    kept) and the alarm and health objects of the run's JSON-lines log."""
    endpoint = Endpoint()
    log = tmp_path / "run.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("DRSN_STREAM_DURATION", None)
    try:
        res = subprocess.run([sys.executable, "-m", "drsn_stream", "--source", source, "--duration", "10",
                              "--jsonl", str(log), "--webhook", endpoint.url, "--engine-process", "off", *flags],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    finally:
        endpoint.close()
    assert res.returncode == 0, res.stderr[-2000:]
    return endpoint, [o for o in map(json.loads, log.read_text().splitlines()) if o["type"] in ("alarm", "health")]


@pytest.mark.slow
def test_the_monitor_posts_every_alarm_and_health_change_it_logs(tmp_path: Path) -> None:
    endpoint, logged = _monitor_posting(tmp_path, "sim?machines=4")
    assert any(o["type"] == "alarm" for o in logged), "the simulator raised no alarm in 10 s"
    key = lambda o: (o["type"], o["stream"], o["time"], o.get("to"))  # noqa: E731
    assert [key(b) for _, _, b in endpoint.posts] == [key(o) for o in logged]  # each once, in order
    path, headers, body = endpoint.posts[0]
    assert path == f"/hook/{SECRET}" and headers["Content-Type"] == "application/json"
    assert body["host"] == socket.gethostname() and body["text"].startswith(f"{socket.gethostname()}: ")
    assert "ALARM" in next(b["text"] for _, _, b in endpoint.posts if b["type"] == "alarm")
    assert not any(b["type"] in ("prediction", "note", "stats") for _, _, b in endpoint.posts)


def test_an_endpoint_that_is_down_is_said_without_its_secret_and_the_monitor_goes_on() -> None:
    url = f"http://127.0.0.1:{_free_port()}/hook/{SECRET}"  # nothing listens there
    sink = WebhookSink(url)
    sink.write(_alarm())
    assert wait_until(lambda: sink.failed == 1, 30)  # three tries, 1 s and 2 s apart
    with pytest.raises(WriteError) as err:
        sink.write({"type": "prediction", "stream": "pump/m1"})  # the next write says it
    msg = str(err.value)
    assert msg.startswith(f"webhook {url.split('/hook')[0]}: cannot reach it (") and "refused" in msg.lower()
    assert SECRET not in msg and "/hook" not in msg
    sink.write({"type": "prediction", "stream": "pump/m1"})  # said once, not on every write
    sink.close()


@pytest.mark.parametrize("status, tries", [(400, 1), (503, 3), (429, 3)])
def test_a_refusal_is_not_tried_again_and_a_server_error_or_a_rate_limit_is(status: int, tries: int) -> None:
    endpoint = Endpoint(status)
    sink = WebhookSink(endpoint.url)
    try:
        sink.write(_alarm())
        assert wait_until(lambda: sink.failed == 1, 30)
        assert len(endpoint.posts) == tries
        with pytest.raises(WriteError, match=f"answered {status} "):
            sink.write(_alarm(to="NORMAL"))
        assert wait_until(lambda: len(endpoint.posts) > tries, 10)
    finally:
        endpoint.status = 200
        try:
            sink.close()
        except WriteError:
            pass
        endpoint.close()


def test_a_url_with_a_user_and_password_posts_with_basic_authentication_and_never_shows_them() -> None:
    import base64

    endpoint = Endpoint()
    url = endpoint.url.replace("http://", "http://alice:s3cr%40t@")  # an @ in the password, quoted
    sink = WebhookSink(url)
    try:
        sink.write(_alarm())
        sink.close()  # before, the host was taken for "alice:s3cr%40t@127.0.0.1": never delivered
        assert sink.sent == 1 and len(endpoint.posts) == 1
        path, headers, _ = endpoint.posts[0]
        assert path == f"/hook/{SECRET}"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
        endpoint.status = 401
        sink = WebhookSink(url)
        sink.write(_alarm())
        with pytest.raises(WriteError) as err:
            sink.close()
    finally:
        endpoint.close()
    msg = str(err.value)
    assert "answered 401" in msg and "alice" not in msg and "s3cr" not in msg and SECRET not in msg


def test_what_is_queued_at_the_end_is_sent_before_the_run_ends() -> None:
    endpoint = Endpoint()
    sink = WebhookSink(endpoint.url)
    for i in range(20):
        sink.write(_alarm(stream=f"pump/m{i}"))
    sink.close()
    endpoint.close()
    assert [b["stream"] for _, _, b in endpoint.posts] == [f"pump/m{i}" for i in range(20)]


def test_a_digest_posts_the_first_event_at_once_and_gathers_the_next_ones_into_one_post() -> None:
    endpoint = Endpoint()
    sink = WebhookSink(endpoint.url, digest_s=60.0)
    try:
        sink.write(_alarm(stream="pump/first"))
        assert wait_until(lambda: len(endpoint.posts) == 1, 10)  # not held for the span
        for i in range(25):  # a plant-wide burst within the span: no POST until the span ends
            sink.write(_alarm(stream=f"pump/m{i}"))
        sink.close()  # the run ends: what was gathered goes out now
    finally:
        endpoint.close()
    bodies = [b for _, _, b in endpoint.posts]
    assert len(bodies) == 2 and [b["type"] for b in bodies] == ["digest", "digest"]
    assert bodies[0]["count"] == 1 and bodies[0]["events"][0]["stream"] == "pump/first"
    assert bodies[1]["count"] == 25 and [e["stream"] for e in bodies[1]["events"]] == [f"pump/m{i}" for i in range(25)]
    assert bodies[1]["events"][0] == _alarm(stream="pump/m0")  # each event as posted alone, all of it
    text = bodies[1]["text"].splitlines()
    host = socket.gethostname()
    assert text[0] == f"{host}: 25 events: 25 to ALERT" and bodies[1]["host"] == host
    assert len(text) == 1 + 20 + 1 and "pump/m0" in text[1] and "ALARM" in text[1] and text[-1] == "... and 5 more"
    assert sink.sent == 26 and sink.failed == 0


@pytest.mark.slow
def test_the_monitor_with_a_digest_posts_every_event_in_few_messages(tmp_path: Path) -> None:
    endpoint, logged = _monitor_posting(tmp_path, "sim?machines=8", "--webhook-digest", "5m")
    assert len(logged) > 2, "the simulator raised too few alarms in 10 s to gather"
    bodies = [b for _, _, b in endpoint.posts]
    assert len(bodies) == 2  # the first event at once; the rest at the end of the run, not one POST each
    key = lambda o: (o["type"], o["stream"], o["time"], o.get("to"))  # noqa: E731
    assert [key(e) for b in bodies for e in b["events"]] == [key(o) for o in logged]
    assert sum(b["count"] for b in bodies) == len(logged) and bodies[0]["count"] < len(logged)


@pytest.mark.parametrize("flags, match", [
    (["--webhook-digest", "1m"], "give --webhook URL too"),
    (["--webhook", "http://127.0.0.1:9/x", "--webhook-digest", "0.5"], "from 1 s to a day"),
    (["--webhook", "http://127.0.0.1:9/x", "--webhook-digest", "2d"], "from 1 s to a day"),
])
def test_a_digest_without_a_webhook_or_out_of_range_is_refused_before_the_monitor_starts(
        flags: list[str], match: str) -> None:
    import argparse

    from drsn_stream.app.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ConfigError, match=match):
        config_from_args(parser.parse_args(["--source", "sim", *flags]))


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "https://:443/x",
                                 "https://hooks.example.com:port/x"])
def test_a_url_that_is_no_http_url_is_refused_before_the_monitor_starts(url: str) -> None:
    from drsn_stream.sinks import SinksConfig

    with pytest.raises(ConfigError, match="expected an http:// or https:// URL"):
        SinksConfig(webhook=url)


def test_an_endpoints_reason_phrase_cannot_put_escape_sequences_on_the_operators_terminal() -> None:
    """The endpoint writes the reason phrase the monitor shows; a peer's bytes reach the terminal
    only as printable characters (before: ESC and BEL went through to the dashboard)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 400 \x1b[2J\x1b]0;owned\x07Bad\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    sink = WebhookSink(f"http://127.0.0.1:{server.getsockname()[1]}/x")
    try:
        sink.write(_alarm())
        assert wait_until(lambda: sink.failed == 1, 30)
        with pytest.raises(WriteError) as err:
            sink.write(_alarm(to="NORMAL"))
        assert "answered 400 " in str(err.value) and all(c.isprintable() for c in str(err.value)), repr(str(err.value))
    finally:
        try:
            sink.close()
        except WriteError:
            pass
        server.close()


@pytest.mark.slow
def test_the_webhooks_posts_are_counted_in_the_metrics() -> None:
    from drsn_stream.app.pipeline import Pipeline
    from drsn_stream.app.runconfig import RunConfig
    from drsn_stream.sinks import SinksConfig, make_sinks
    from drsn_stream.sinks.metrics import format_metrics

    endpoint = Endpoint()
    config = RunConfig(sources=("sim:bearing?machines=4",), device="cpu", engine_process=False, stats_every_s=3600,
                       sinks=SinksConfig(webhook=endpoint.url))
    pipe = Pipeline(config, sinks=make_sinks(config.sinks))
    pipe.start()
    try:
        assert wait_until(lambda: len(endpoint.posts) >= 2, 60), "no alarm posted within 60 s"
    finally:
        pipe.stop()  # its outputs closed: every queued event posted, the counts final
        endpoint.close()
    text = format_metrics(pipe.snapshot())
    assert f'drsn_output_objects_total{{output="webhook",result="sent"}} {float(len(endpoint.posts))}' in text
    assert 'drsn_output_objects_total{output="webhook",result="failed"} 0.0' in text
