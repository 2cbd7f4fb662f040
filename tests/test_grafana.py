"""The Grafana dashboard in docs/grafana: importable JSON whose every query names exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsn_stream.app.pipeline import Pipeline, RunConfig
from drsn_stream.sinks.metrics import MetricsServer

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "drsn-stream.json"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, keywords, labels and durations left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery durations
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\()?", s):
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def queries(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out = []
    panels = list(dash["panels"])
    while panels:
        p = panels.pop()
        panels.extend(p.get("panels", []))  # panels inside collapsed rows
        for target in p.get("targets", []):
            out.append((f"panel {p['title']!r} {target['refId']}", target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            out.append((f"variable {var['name']}", inner.group(1) if inner else q))
    return out


def test_metric_name_extraction_finds_what_a_query_reads():
    assert metric_names('sum by (le) (rate(drsn_latency_seconds_bucket{instance=~"$instance"}[$__rate_interval]))') \
        == {"drsn_latency_seconds_bucket"}
    assert metric_names("sum(rate(a_sum[5m])) / sum(rate(a_count[5m])) > bool 0 or on(x) b") == {"a_sum", "a_count", "b"}
    assert metric_names('histogram_quantile(0.99, x_bucket{le="0.5"}) offset 5m') == {"x_bucket"}


def test_dashboard_is_importable_json():
    dash = json.loads(DASHBOARD.read_text())
    assert isinstance(dash["schemaVersion"], int) and dash["title"] and dash["uid"]
    assert dash["id"] is None  # an import creates it
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource" and inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"], p["title"]
    kinds = {p["type"] for p in dash["panels"]}
    assert {i["id"] for i in dash["__requires"] if i["type"] == "panel"} >= kinds
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for wanted in ("windows classified per second", "latency", "drops", "alarm level per stream",
                   "sensor health", "batch size"):
        assert wanted in titles


@pytest.fixture(scope="module")
def scraped() -> str:
    """What a real running monitor with a webhook output exports, scraped over HTTP."""
    from helpers import WebhookEndpoint

    from drsn_stream.sinks import SinksConfig, make_sinks

    endpoint = WebhookEndpoint()
    cfg = RunConfig(sources=("sim:bearing?machines=2",), device="cpu", engine_process=False, threads=1,
                    sinks=SinksConfig(webhook=endpoint.url))
    pipe = Pipeline(cfg, sinks=make_sinks(cfg.sinks))
    try:
        with MetricsServer(pipe.snapshot, port=0) as server:
            pipe.start()
            try:
                text = ""
                for _ in range(120):
                    with urllib.request.urlopen(server.url, timeout=10) as resp:
                        text = resp.read().decode()
                    if re.search(r"^drsn_windows_total [1-9]", text, re.M):
                        break
                    time.sleep(0.25)
            finally:
                pipe.quit.set()
                pipe.stop()
    finally:
        endpoint.close()
    return text


@pytest.fixture(scope="module")
def exported(scraped: str) -> set[str]:
    """Sample names the monitor exports."""
    return {s.name for fam in text_string_to_metric_families(scraped) for s in fam.samples}


def test_the_metrics_table_lists_every_metric_the_monitor_exports(scraped: str) -> None:
    table = set(re.findall(r"^\| `(drsn_\w+)` \|", (DASHBOARD.parent / "README.md").read_text(), re.M))
    families = {fam.name + ("_total" if fam.type == "counter" else "")
                for fam in text_string_to_metric_families(scraped) if fam.name.startswith("drsn_")}
    assert {"drsn_engine_quiet_seconds", "drsn_output_objects_total", "drsn_windows_total"} <= families
    assert families - table == set(), "exported but not in docs/grafana/README.md's table"


def test_every_query_names_only_exported_metrics(exported):
    dash = json.loads(DASHBOARD.read_text())
    qs = queries(dash)
    assert len(qs) >= 15
    for where, expr in qs:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"{where}: {sorted(missing)} not exported by the monitor"


ALERTS = DASHBOARD.parent / "alerts.yml"


def test_every_alert_rule_names_only_exported_metrics(exported):
    exprs = re.findall(r"^\s+expr: (.+)$", ALERTS.read_text(), re.M)
    assert len(exprs) >= 9
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        missing = names - exported - {"up"}  # up: Prometheus's own, per scrape target
        assert not missing, f"{expr}: {sorted(missing)} not exported by the monitor"


def test_the_alert_rules_load_and_fire_when_their_unit_tests_say():
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (tools/setup.sh --dev installs it)")
    check = subprocess.run([tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 9 rules found" in check.stdout, check.stdout + check.stderr
    # each rule fires (and stays quiet) when alerts-test.yml says, on series shaped as the monitor's
    run = subprocess.run([tool, "test", "rules", "alerts-test.yml"], cwd=ALERTS.parent, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    tested = set(re.findall(r"alertname: (\w+)", (ALERTS.parent / "alerts-test.yml").read_text()))
    assert tested == set(re.findall(r"- alert: (\w+)", ALERTS.read_text()))  # every rule has its test


# who hears each rule (docs/grafana/alertmanager.yml): a stream at DANGER or a monitor that
# classifies nothing pages someone; ALERT goes to the machine's owners; a sensor to check to
# maintenance; the monitor's own health to whoever runs it
ROUTED_TO = {"DrsnStreamDanger": "pager", "DrsnEngineStalled": "pager", "DrsnMonitorDown": "pager",
             "DrsnStreamAlert": "machine-owners", "DrsnSensorCheck": "maintenance", "DrsnNotReady": "operators",
             "DrsnWindowsDropped": "operators", "DrsnLatencyHigh": "operators", "DrsnOutputFailing": "operators"}


def test_alertmanager_routes_every_rule_to_whom_it_concerns():
    tool = shutil.which("amtool")
    if tool is None:
        pytest.skip("amtool is not installed (tools/setup.sh --dev installs prometheus-alertmanager)")
    config = ALERTS.parent / "alertmanager.yml"
    check = subprocess.run([tool, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    rules = dict(re.findall(r"- alert: (\w+)\n(?:.*\n)*?\s+severity: (\w+)", ALERTS.read_text()))
    assert set(rules) == set(ROUTED_TO)  # every rule has a receiver said for it here
    for name, severity in [*rules.items(), ("SomeoneElsesAlert", "critical")]:
        r = subprocess.run([tool, "config", "routes", "test", f"--config.file={config}", f"alertname={name}",
                            f"severity={severity}", "instance=plant-1:9464", "stream=pump-7"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == ROUTED_TO.get(name, "operators"), (name, r.stdout)
