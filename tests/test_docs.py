"""The documents say what the binary does (issue "Trust and operations…", item 8): the metric
names every document mentions are the ones /metrics serves, and every metric served is
documented; the configuration keys, their defaults and which need a restart, as
docs/configuration.md, the man page and the README give them, are the configuration table's
(waguard --list-keys); the documents link nothing outside the repository but the web
addresses a user must type; and no document names a file of the repository that is not there."""
import re
import subprocess
from pathlib import Path

import pytest

from daemon import WAGUARD_BIN

TOP = Path(__file__).resolve().parent.parent
DOCS = sorted((TOP / "docs").glob("*.md")) + [TOP / "README.md", TOP / "deploy" / "DEPLOYING.md"]
MAN = TOP / "man" / "waguard.8"
NOW_METRIC = re.compile(r"\bwaguard_[a-z_]+[a-z]\b")
# Names that look like metrics but are not: Redis keys, the systemd unit, files.
NOT_METRICS = {"waguard_sha", "waguard_prefix"}


def list_keys():
    out = subprocess.run([str(WAGUARD_BIN), "--list-keys"], capture_output=True, text=True, check=True).stdout
    keys = {}
    for line in out.splitlines():
        section, key, default, change = line.split("\t")
        keys[(section, key)] = (default, change)
    return keys


def served_metrics(procs):
    """Every metric family two daemons serve: a Cloud one with the identity check, and an
    On-Premises one reading security notifications (so the families that only one of them
    has are served too)."""
    names = set()
    r = procs.redis()
    sim = procs.sim(auth="none")
    cloud = procs.daemon(r, sim, overrides={"upstream": {"api": "cloud", "auth": "none",
                                                         "phone_number_id": "PN1", "identity_check": "on"}})
    sim2 = procs.sim()
    onprem = procs.daemon(r, sim2)
    for wg in (cloud, onprem):
        # one of each kind of request, so that labelled families have a sample
        wg.get("/v1/gate/16315551234?type=text")
        wg.webhook({"statuses": []})
        for line in wg.metrics_text().splitlines():
            m = re.match(r"# (?:HELP|TYPE) (waguard_[a-z_]+)", line)
            if m:
                names.add(m.group(1))
    return names


def mentioned_metrics(text):
    found = set()
    for m in NOW_METRIC.finditer(text):
        name = m.group(0)
        if name in NOT_METRICS or name.endswith(("_conf", "_service", "_socket", "_json", "_yml")):
            continue
        found.add(name)
    return found


def family(name):
    """A histogram's samples name the family (…_bucket, …_sum, …_count)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_metric_names_in_the_documents_are_the_ones_served(procs):
    served = served_metrics(procs)
    assert "waguard_build_info" in served and "waguard_security_notifications" in served, served
    for doc in DOCS + [MAN, TOP / "deploy" / "waguard.rules.yml", TOP / "deploy" / "grafana-waguard.json"]:
        text = doc.read_text(encoding="utf-8")
        if doc == MAN:
            text = text.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
        for name in mentioned_metrics(text):
            assert name in served or family(name) in served, "%s names %s, which /metrics does not serve" % (
                doc.relative_to(TOP), name)
    # ... and every family served is documented for the operator: in routes.md and the man page.
    routes = (TOP / "docs" / "routes.md").read_text(encoding="utf-8")
    man = MAN.read_text(encoding="utf-8").replace("\\-", "-")
    for name in served:
        assert name in routes, "docs/routes.md does not document %s" % name
        assert name in man, "man/waguard.8 does not document %s" % name


def config_tables():
    """docs/configuration.md's key tables: {(section, key): (default cell, notes cell)}."""
    text = (TOP / "docs" / "configuration.md").read_text(encoding="utf-8")
    found, section = {}, None
    for line in text.splitlines():
        m = re.match(r"^### `\[([a-z]+)\]`", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^\| `([a-z_<>]+)` \|([^|]*)\|([^|]*)\|(.*)\|\s*$", line)
        if m and section:
            found[(section, m.group(1))] = (m.group(3).strip(), m.group(4))
    return found


def test_configuration_reference_is_the_configuration_table():
    keys = list_keys()
    doc = config_tables()
    assert set(doc) == set(keys), "docs/configuration.md keys differ from waguard --list-keys: " \
        "missing %s, extra %s" % (sorted(set(keys) - set(doc)), sorted(set(doc) - set(keys)))
    for k, (default, change) in keys.items():
        cell, notes = doc[k]
        want = "empty" if default == "" else "`%s`" % default
        assert cell == want, "%s.%s: the default is %r, docs/configuration.md says %r" % (k[0], k[1], want, cell)
        assert ("*restart*" in notes) == (change == "restart"), \
            "%s.%s: a change needs a %s, docs/configuration.md says otherwise" % (k[0], k[1], change)


def test_restart_lists_in_the_prose_are_the_tables():
    """Every sentence listing the keys that need a restart (the docs, the man page, the unit's
    and the example configurations' comments) names exactly those keys."""
    restart = {"%s" % k for (s, k), (_, c) in list_keys().items() if c == "restart"}
    units = [TOP / "systemd" / "waguard.service"] + sorted((TOP / "deploy").glob("*.conf"))
    texts = {p: p.read_text(encoding="utf-8") for p in DOCS + [MAN] + units}
    texts[MAN] = texts[MAN].replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
    checked = 0
    for path, text in texts.items():
        for para in re.split(r"\n\s*\n", text):
            flat = " ".join(para.split())
            if not re.search(r"need(s)? a restart|only change with a restart|restart-only|take effect only", flat):
                continue
            named = {k for k in re.findall(r"`?\[?(?:[a-z]+\]\s)?([a-z_]+)`?", flat)
                     if k in restart}
            if len(named) < 2:
                continue                      # a sentence about one key, not the list
            checked += 1
            assert named == restart, "%s: a list of the restart-only keys names %s, the table %s" % (
                path.relative_to(TOP), sorted(named), sorted(restart))
    assert checked >= 1, "no document lists the restart-only keys"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(TOP)))
def test_documents_link_only_inside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if target.startswith("#"):
            continue
        assert not re.match(r"^[a-z]+:", target), "%s links outside the repository: %s" % (
            doc.relative_to(TOP), target)
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), "%s links %s, which is not there" % (doc.relative_to(TOP), target)


def test_readme_anchors_exist():
    text = (TOP / "README.md").read_text(encoding="utf-8")
    anchors = set()
    for line in text.splitlines():
        m = re.match(r"^#+ (.+)$", line)
        if m:
            a = m.group(1).strip().lower()
            a = re.sub(r"[^\w\- ]", "", a).replace(" ", "-")
            anchors.add(a)
    for target in LINK.findall(text):
        if target.startswith("#"):
            assert target[1:] in anchors, "README.md links #%s, no such heading" % target[1:]
