"""The README's quick start, run as a newcomer would: `make run`'s script (tests/run-dev.sh)
in the background, then every command of the README's quick-start block in one shell, in
order. What the README shows under a command (`# {…}` JSON, `# HTTP/1.1 423 …`) must be what
the command prints: every "key":value the comment gives with a whole value (strings without
"…", numbers, booleans, null, lists of those) must appear in the command's JSON output, and
a status line must be the answer's. So the README cannot drift from the binary."""
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
README = TOP / "README.md"
MARK = "<!-- quick start: tests/test_quickstart.py runs this block against `make run` -->"


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def quickstart_commands():
    text = README.read_text(encoding="utf-8")
    assert MARK in text, "the README's quick-start block lost its marker"
    block = text.split(MARK, 1)[1]
    block = block.split("```sh\n", 1)[1].split("\n```", 1)[0]
    commands, pending = [], None        # [(command, [shown lines])]
    for line in block.splitlines():
        if pending is not None:
            pending += "\n" + line
            if not line.endswith("\\"):
                commands.append([pending, []])
                pending = None
            continue
        if not line.strip():
            continue
        if line.startswith("#"):
            if commands:
                commands[-1][1].append(line[1:].strip())
            continue
        if line.endswith("\\"):
            pending = line
        else:
            commands.append([line, []])
    # A comment block before the first command's output belongs to nobody: only comments
    # right after a command are its output, and explanatory ones start with a capital
    # letter or a word; outputs start with { or HTTP/.
    return [(c, [s for s in shown if s.startswith(("{", "HTTP/"))]) for c, shown in commands]


_PAIR = re.compile(r'"([A-Za-z_]+)":(true|false|null|-?\d+(?:\.\d+)?|"[^"…]*"|\[[^\[\]…]*\])(?=[,}\]])')


def shown_pairs(shown):
    pairs = []
    for line in shown:
        for key, value in _PAIR.findall(line):
            pairs.append((key, json.loads(value)))
    return pairs


def has_pair(doc, key, value):
    if isinstance(doc, dict):
        if key in doc and doc[key] == value:
            return True
        return any(has_pair(v, key, value) for v in doc.values())
    if isinstance(doc, list):
        return any(has_pair(v, key, value) for v in doc)
    return False


def test_the_quickstart_runs_as_written(tmp_path):
    if not (port_free(8080) and port_free(9090)):
        pytest.skip("make run's ports 8080 and 9090 are taken on this machine")
    for tool in ("redis-server", "curl"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            pytest.skip(tool + " is not installed")
    commands = quickstart_commands()
    assert len(commands) >= 10, commands
    log = open(tmp_path / "run-dev.log", "w")
    run = subprocess.Popen(["bash", "tests/run-dev.sh"], cwd=TOP, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", 8080), timeout=0.2):
                    break
            except OSError:
                assert run.poll() is None, (tmp_path / "run-dev.log").read_text()
                time.sleep(0.1)
        time.sleep(0.5)                    # the first blocklist read and identity check
        printed = (tmp_path / "run-dev.log").read_text()
        assert "admin token:" in printed and "/console/" in printed, printed
        # The token make run prints signs in to the console and acts (issue 22's newcomer).
        token = re.search(r"admin token:\s+(\S+)", printed).group(1)
        import requests
        page = requests.get("http://127.0.0.1:8080/console/", timeout=5)
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        act = requests.post("http://127.0.0.1:8080/v1/identities/retry", timeout=5, json={"expected": 0},
                            headers={"Authorization": "Bearer " + token})
        assert act.status_code in (200, 202) and act.json()["retried"] == 0, act.text
        act = requests.post("http://127.0.0.1:8080/v1/identities/retry", timeout=5, json={"expected": 0},
                            headers={"Authorization": "Bearer not-the-token"})
        assert act.status_code in (401, 403), act.text

        # One shell for the whole block (its variables carry over), a marker after each command.
        script = ["set -u", "cd %s" % json.dumps(str(TOP))]
        for i, (command, _) in enumerate(commands):
            script += [command, 'echo; echo "@@END %d $?"' % i]
        res = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=120)
        outs = re.split(r"\n@@END (\d+) (\d+)\n", "\n" + res.stdout)
        got = {}
        for j in range(1, len(outs) - 1, 3):
            got[int(outs[j])] = (outs[j - 1], int(outs[j + 1]))
        assert len(got) == len(commands), (res.stdout, res.stderr)
        for i, (command, shown) in enumerate(commands):
            out, rc = got[i]
            assert rc == 0, (command, rc, out, res.stderr)
            status = [s for s in shown if s.startswith("HTTP/")]
            if status:
                assert out.lstrip().startswith(status[0]), (command, status[0], out)
                out = out.split("\r\n\r\n", 1)[-1]
            pairs = shown_pairs(shown)
            if not pairs:
                continue
            doc = json.loads(out.strip().splitlines()[-1])
            for key, value in pairs:
                assert has_pair(doc, key, value), (command, key, value, out)
    finally:
        os.killpg(run.pid, 15)
        try:
            run.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, 9)
        log.close()
