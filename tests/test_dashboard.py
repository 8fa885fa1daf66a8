"""deploy/grafana-waguard.json: its shape, and every panel's query run by Debian's prometheus
against a live waguard with traffic (webhooks, gate calls, acknowledgements through the WABA
simulator with failures, a reload), so no panel names a metric or label that does not exist.

Grafana's variables are replaced the way Grafana would for the scrape job `waguard` and
every instance; Prometheus scrapes every second into a temporary directory on a free port.
"""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from daemon import WEBHOOK_TOKEN
from helpers import (DECISION_REASONS, GiveUp, free_port, identity_change, inbound_text,
                     new_wa_id, wait_for)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-waguard.json"

# What Grafana puts in place of its variables: the dashboard's own ($job, $instance with
# "All") and Grafana's ($__rate_interval is at least four scrape intervals).
VARIABLES = {"$__rate_interval": "10s", "$__range": "5m", "$job": "waguard", "$instance": ".*"}


def load():
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def queries(dash):
    """(panel title, refId, expression with the variables replaced)."""
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            expr = t["expr"]
            for var in sorted(VARIABLES, key=len, reverse=True):
                expr = expr.replace(var, VARIABLES[var])
            out.append((p["title"], t["refId"], expr))
    return out


def test_dashboard_shape():
    dash = load()
    assert dash["uid"] == "waguard" and dash["title"] == "waguard"
    assert isinstance(dash["schemaVersion"], int)
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "job", "instance"]
    panels = list(all_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for (x, y, w, h, t) in boxes:
            overlap = g["x"] < x + w and x < g["x"] + g["w"] and g["y"] < y + h and y < g["y"] + g["h"]
            assert not overlap, "%r overlaps %r" % (p["title"], t)
        boxes.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), p
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            assert set(re.findall(r"\$\w+", t["expr"])) <= set(VARIABLES), t["expr"]
            if "waguard_" in t["expr"]:
                assert 'job="$job",instance=~"$instance"' in t["expr"], t["expr"]
    for _, _, expr in queries(dash):
        assert "$" not in expr, expr
    # What the dashboard is for: one panel or more about each.
    text = json.dumps(dash)
    for needle in ("waguard_decision_reasons_total", 'route=\\"webhook\\"', "waguard_webhook_items_total",
                   "waguard_ack_queue_depth", "waguard_ack_queue_oldest_age_seconds",
                   'waguard_upstream_requests_total{job=\\"$job\\",instance=~\\"$instance\\",code=~\\"0|5..\\"}',
                   "waguard_redis_up", "waguard_redis_errors_total", "waguard_config_reloads_total"):
        assert needle in text, needle


class Prometheus:
    def __init__(self, workdir, target_port):
        self.dir = workdir
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        cfg = workdir / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: waguard\n    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n" % target_port)
        prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [prometheus, "--config.file=%s" % cfg, "--storage.tsdb.path=%s" % (workdir / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 30, "prometheus /-/ready", diag=self.log_text)

    def _ready(self):
        if self.proc.poll() is not None:
            raise GiveUp("prometheus exited with %s: %s" % (self.proc.returncode, self.log_text()))
        return requests.get(self.url + "/-/ready", timeout=1).status_code == 200

    def log_text(self):
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]

    def query(self, expr):
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        j = r.json()
        assert r.status_code == 200 and j["status"] == "success", (expr, r.status_code, j)
        return j["data"]["result"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path):
    started = []

    def start(port):
        p = Prometheus(tmp_path, port)
        started.append(p)
        return p
    yield start
    for p in started:
        p.stop()


def test_every_panel_query_returns_data(procs, prometheus_for):
    assert shutil.which("prometheus") or Path("/usr/bin/prometheus").exists(), \
        "prometheus is missing: `make deps` installs it"
    _, sim, wg = procs.stack()
    prom = prometheus_for(wg.port)

    # Traffic. Identity changes whose acknowledgements the WABA client refuses twice
    # (upstream 503s, retries) before taking them; gate calls denied and allowed; an
    # inbound message, its duplicate, a dead letter; a webhook with a wrong token; a reload.
    sim.fail(count=2, status=503, path_prefix="/v1/contacts/")
    changed = [new_wa_id() for _ in range(3)]
    for w in changed:
        sim.set_identity(w, "Rc/eg9RQ0JA=")
        wg.webhook_ok(identity_change(w, "Rc/eg9RQ0JA=", int(time.time())))
    writer = new_wa_id()
    wg.webhook_ok(inbound_text(writer, msg_id="dash-dup"))
    wg.webhook_ok(inbound_text(writer, msg_id="dash-dup"))
    wg.webhook_ok({"messages": [{"type": "text"}]})
    assert wg.webhook(inbound_text(writer), token=WEBHOOK_TOKEN + "-wrong").status_code == 401
    assert wg.gate(changed[0]).status_code == 423
    assert wg.gate(writer).status_code == 200
    assert wg.gate_batch([changed[1], writer], type="template").status_code == 200
    wait_for(lambda: wg.metric("waguard_ack_attempts_total", outcome="ok") >= 3, 15,
             "the acknowledgements to go through after the refusals")
    wg.reload()
    wait_for(lambda: wg.metric("waguard_config_reloads_total", result="ok") == 1, 10, "a reload")

    # Prometheus has seen all of it.
    wait_for(lambda: prom.query('waguard_config_reloads_total{job="waguard",result="ok"} == 1'), 20,
             "prometheus to scrape the reload", diag=prom.log_text)
    target = prom.query('up{job="waguard"}')
    assert [float(s["value"][1]) for s in target] == [1.0]

    dash = load()
    for title, ref, expr in queries(dash):
        wait_for(lambda: prom.query(expr), 20, "data for panel %r query %s: %s" % (title, ref, expr),
                 diag=prom.log_text)

    # Where a panel splits by a label, the values the traffic made are there.
    def labels(expr_part, label):
        for _, _, expr in queries(dash):
            if expr_part in expr:
                return {s["metric"].get(label) for s in prom.query(expr)}
        raise AssertionError("no panel query contains %s" % expr_part)
    assert labels("sum by (reason) (rate(waguard_decision_reasons_total", "reason") == set(DECISION_REASONS)
    assert labels("sum by (outcome) (rate(waguard_decisions_total", "outcome") == {"allowed", "denied"}
    assert {"200", "401"} <= labels('sum by (code) (rate(waguard_http_requests_total', "code")
    assert {"503", "200"} <= labels("sum by (code) (rate(waguard_upstream_requests_total", "code")
    assert {"ok", "retry"} <= labels("sum by (outcome) (rate(waguard_ack_attempts_total", "outcome")
    assert {"ok", "failed"} == labels("sum by (result) (increase(waguard_config_reloads_total", "result")
    assert {"identity_change", "inbound_message", "dead_letter"} <= \
        labels("sum by (kind) (rate(waguard_webhook_items_total", "kind")
    # The upstream errors the simulator made are counted by the errors panel's selector.
    errors = prom.query('sum(waguard_upstream_requests_total{job="waguard",code=~"0|5.."})')
    assert float(errors[0]["value"][1]) >= 2
