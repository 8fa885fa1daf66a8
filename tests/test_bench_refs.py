"""The benchmark's references do what bench/run.sh says they do, so that a ratio in `make bench`
compares waguard with the work it claims: the ceiling probe's gated forward (bench/ceiling.c,
the send proxy's reference) reads the recipient in Redis, forwards the body on to the upstream
stub and answers the stub's status and body; it refuses a recipient its Redis key marks
unacknowledged, and a body it cannot read."""
import concurrent.futures as cf
import shutil
import subprocess

import pytest
import requests

from helpers import free_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


def build(tmp, src, out, libs):
    flags = subprocess.run(["pkg-config", "--cflags", "--libs"] + libs, capture_output=True,
                           text=True, check=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(tmp / out), src]
                   + flags, check=True)
    return tmp / out


@pytest.fixture
def refs(tmp_path, private_redis):
    stub_bin = build(tmp_path, "bench/upstream_stub.c", "stub", ["libevent"])
    ceil_bin = build(tmp_path, "bench/ceiling.c", "ceiling", ["libevent", "libcjson", "hiredis"])
    procs = []
    stub = subprocess.Popen([str(stub_bin), "--port", "0"], stdout=subprocess.PIPE, text=True)
    procs.append(stub)
    line = stub.stdout.readline()
    assert line.startswith("stub listening on "), line
    stub_url = line.split()[-1]
    port = free_port()
    ceil = subprocess.Popen([str(ceil_bin), "--port", str(port), "--redis-port", str(private_redis.port),
                             "--upstream-port", stub_url.rsplit(":", 1)[1], "--upstream-conns", "2"],
                            stdout=subprocess.DEVNULL)
    procs.append(ceil)
    url = "http://127.0.0.1:%d" % port
    wait_for(lambda: requests.get(url + "/healthz", timeout=1).status_code == 200, 10,
             what="the ceiling probe")
    yield url, private_redis.client()
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def send(url, to):
    return requests.post(url + "/v1/messages", timeout=5,
                         json={"recipient_type": "individual", "to": to, "type": "text",
                               "text": {"body": "hello"}})


def test_gated_forward_relays_the_upstream_answer(refs):
    url, _ = refs
    for to in ("447700900123", "+5511987650001", "919876543210", "16315551234"):
        r = send(url, to)
        assert r.status_code == 201, r.text
        assert r.json()["messages"][0]["id"].startswith("gBEG"), r.text


def test_gated_forward_many_at_once_on_few_connections(refs):
    """More requests than upstream connections: they wait their turn, every one answered."""
    url, _ = refs
    with cf.ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(lambda i: send(url, "9198765%05d" % i).status_code, range(64)))
    assert codes == [201] * 64


def test_gated_forward_reads_redis_and_refuses(refs):
    url, r = refs
    r.hset("ceiling:user:{5491156121008}", mapping={"id_hash": "H=", "id_ack": "0"})
    assert send(url, "5491156121008").status_code == 423
    r.hset("ceiling:user:{5491156121008}", "id_ack", "1")
    assert send(url, "5491156121008").status_code == 201
    bad = requests.post(url + "/v1/messages", data=b"{not json", timeout=5)
    assert bad.status_code == 400
    assert send(url, "not a number!").status_code == 400
