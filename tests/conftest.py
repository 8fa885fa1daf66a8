"""Fixtures for the waguard integration tests: a real redis-server and the real build/waguard
(the processes themselves: tests/daemon.py; payloads, HMAC, metrics, wait_for: tests/helpers.py).

Fixture API (see also the docstrings below):

  redis_server     (session)  RedisServer shared by the session; use `redis_client` instead
                              unless you need the port.
  redis_client     (function) redis.Redis(decode_responses=True) on the shared server, after
                              FLUSHALL; restarts the shared server if a test stopped it.
  private_redis    (function) RedisServer of its own (stop()/start() it freely; same port).
  waguard_factory  (function) start(overrides=None, files=None, env=None, redis=None,
                              listen=None, extra_config="", wait=True, config_text=None)
                              → Waguard.  Every daemon started is stopped with SIGTERM at
                              teardown and must exit 0; its stderr is printed when the test fails.
  waguard          (function) the module's shared default daemon (ack=auto, unreachable
                              upstream), Redis flushed before the test.
  procs            (function) procs.Procs: redis-servers, WABA simulators and daemons of the
                              test's own (the acknowledgement settings, daemon.ACK_OVERRIDES);
                              the same teardown as waguard_factory.
  waguard_bin      (session)  Path of build/waguard, or $WAGUARD_TEST_BINARY (fails the test
                              when it is missing).

Default tokens: API_TOKEN, ADMIN_TOKEN, WEBHOOK_TOKEN, VERIFY_TOKEN, HMAC_SECRET (daemon.py).
"""
import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from daemon import (NO_REDIS_URL, WAGUARD_BIN, Daemons, RedisServer,  # noqa: E402
                    default_config, free_port, merge_config, render_config)
from procs import Procs  # noqa: E402

# The harness's own WAGUARD_* variables (WAGUARD_BIN, WAGUARD_WRAPPER: read by daemon.py
# above) stop here: waguard refuses a WAGUARD_* variable that names no key of its
# configuration, and every process the tests start (make deb's unit tests included)
# inherits this environment.
HARNESS_ENV = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("WAGUARD_")]}


class WaguardFactory(Daemons):
    seq = 0

    def __init__(self, base_dir, default_redis, shared_prefix="wgf"):
        super().__init__(base_dir)
        self.default_redis = default_redis
        self.shared_prefix = shared_prefix     # None: the default prefix (the module's daemon)

    def __call__(self, overrides=None, files=None, env=None, redis=None, listen=None,
                 extra_config="", wait=True, config_text=None, args=None, port=None):
        """Start a daemon.  overrides: {section: {key: value or None}}; files: {name: text}
        written next to the config (defaults: the token files); env: extra environment;
        redis: a RedisServer (default: the shared one); listen: the [server] listen value
        (default 127.0.0.1:<free port>); extra_config: raw INI appended; config_text: the
        whole config file instead (placeholders {port} {redis_url} are formatted)."""
        port = port or free_port()
        rs = redis or self.default_redis
        redis_url = rs.url if rs is not None else NO_REDIS_URL
        if config_text is not None:
            cfg = config_text.format(port=port, redis_url=redis_url)
        else:
            cfg = default_config(port, redis_url)
            if listen is not None:
                cfg["server"]["listen"] = listen
            if rs is not None and rs is self.default_redis and self.shared_prefix is not None:
                # On the session's shared Redis, beside the module's own daemon: a prefix of
                # its own, or the two would share (and take) each other's acknowledgement work.
                WaguardFactory.seq += 1
                cfg["redis"]["key_prefix"] = "%s%d" % (self.shared_prefix, WaguardFactory.seq)
            merge_config(cfg, overrides)
            if extra_config:
                cfg = render_config(cfg) + extra_config
        return self.start_daemon(cfg, files=files, env=env, port=port, args=args, wait=wait)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fault: the fault suite (tests/test_fault.py): kill -9, Redis restarts, SIGHUP "
        "and a failing WABA client; `-m fault` runs only it, `-m 'not fault'` all but it")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _test_failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


def _tear_down(request, daemons, header):
    """daemons.cleanup(); their logs are printed when the test failed or one of them did not
    exit 0 on SIGTERM (which fails the test)."""
    bad = daemons.cleanup()
    if _test_failed(request) or bad:
        daemons.dump_logs(header)
    if bad:
        pytest.fail("waguard did not exit 0 on SIGTERM at teardown: %s" % "; ".join(bad))


@pytest.fixture(scope="session")
def waguard_bin():
    if not WAGUARD_BIN.exists():
        pytest.fail("%s is missing: run `make` first" % WAGUARD_BIN)
    return WAGUARD_BIN


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as rs:
        yield rs


@pytest.fixture
def redis_client(redis_server):
    if not redis_server.running():
        redis_server.start()
    c = redis_server.client()
    c.flushall()
    yield c
    c.close()


@pytest.fixture
def private_redis():
    with RedisServer() as rs:
        yield rs


@pytest.fixture
def waguard_factory(request, waguard_bin, redis_server, tmp_path):
    if not redis_server.running():
        redis_server.start()
    f = WaguardFactory(tmp_path, redis_server)
    yield f
    _tear_down(request, f, request.node.nodeid)


@pytest.fixture(scope="module")
def _module_waguard(request, waguard_bin, redis_server, tmp_path_factory):
    f = WaguardFactory(tmp_path_factory.mktemp("wgmod"), redis_server, shared_prefix=None)
    yield f()
    _tear_down(request, f, request.module.__name__)


@pytest.fixture
def waguard(request, _module_waguard, redis_client):
    """The module's shared default daemon, Redis flushed.  Its log for this test is printed
    when the test fails."""
    wg = _module_waguard
    if not wg.alive():
        pytest.fail("the shared waguard died earlier:\n%s" % wg.log()[-8000:])
    wg.wait_ready(10)
    start = wg.log_size()
    yield wg
    if _test_failed(request):
        sys.stdout.write("\n----- waguard stderr during %s -----\n%s\n"
                         % (request.node.nodeid, wg.log(start)[-20000:]))


@pytest.fixture
def procs(request, waguard_bin, tmp_path):
    p = Procs(tmp_path)
    yield p
    _tear_down(request, p, request.node.nodeid)
