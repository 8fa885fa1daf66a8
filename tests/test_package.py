"""The Debian package: `make deb` builds it once for this module; the tests read it with
dpkg-deb and lintian, then install, upgrade, remove and purge it in a throw-away root.

The throw-away root: `dpkg --root=DIR --force-script-chrootless`.  dpkg unpacks into DIR
and records the package in DIR/var/lib/dpkg; the maintainer scripts run on this machine
(not chrooted, which would need a whole Debian inside DIR) with DPKG_ROOT=DIR, which
debhelper's snippets, deb-systemd-helper and our postrm honour.  DIR/var/lib/dpkg is
seeded with this machine's records of the packages waguard depends on, so the
dependencies are checked for real.  There is no systemd running here: that the unit is
enabled is read with `systemctl --root`, and that it does not start before the
configuration is written is checked by evaluating the unit's own conditions (loaded by
`systemd-analyze --root`, drop-in included) with `systemd-analyze condition`.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"


def run(cmd, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    res = subprocess.run(cmd, **kw)
    if check and res.returncode != 0:
        raise AssertionError("%s exited %d:\n%s\n%s" % (" ".join(map(str, cmd)), res.returncode,
                                                      res.stdout[-6000:], res.stderr[-6000:]))
    return res


def makefile_var(name):
    m = re.search(r"^%s\s*[:?]?=\s*(.*)$" % name, (ROOT / "Makefile").read_text(), re.M)
    assert m, "no %s in the Makefile" % name
    return m.group(1).strip()


VERSION = makefile_var("VERSION")


@pytest.fixture(scope="module")
def deb():
    """build/waguard_<version>_<arch>.deb, built once by `make deb`."""
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        assert shutil.which(tool), "%s is missing: `make deps` installs it" % tool
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    run(["make", "--no-print-directory", "deb"], cwd=ROOT)
    path = BUILD / ("waguard_%s_%s.deb" % (VERSION, arch))
    assert path.is_file(), "make deb did not leave %s" % path
    return path


def deb_field(deb, field):
    return run(["dpkg-deb", "--field", str(deb), field]).stdout.strip()


def control_member(deb, name):
    return run(["dpkg-deb", "--info", str(deb), name]).stdout


def contents(deb):
    """{path: (mode string, size)} of the package's files and directories."""
    out = {}
    for line in run(["dpkg-deb", "--contents", str(deb)]).stdout.splitlines():
        parts = line.split(None, 5)
        path = parts[5].split(" -> ")[0]
        out[path[2:].rstrip("/") if path.startswith("./") else path] = (parts[0], int(parts[2]))
    return out


# ------------------------------------------------------------------ the package as built


def test_version_follows_the_makefile_and_the_tree_stays_clean(deb):
    changelog = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith("waguard (%s) " % VERSION), \
        "debian/changelog's version is not the Makefile's VERSION %s: %s" % (VERSION, changelog)
    assert deb_field(deb, "Version") == VERSION
    # The build ran in build/deb/, never in the working tree or its parent.
    for leftover in ("debian/waguard", "debian/.debhelper", "debian/files",
                     "debian/debhelper-build-stamp", "debian/waguard.substvars"):
        assert not (ROOT / leftover).exists(), "make deb left %s in the tree" % leftover
    assert not list(ROOT.parent.glob("waguard_%s_*" % VERSION)), \
        "dpkg-buildpackage wrote into %s" % ROOT.parent


def test_build_depends_are_what_the_makefile_uses():
    """Every pkg-config module of the Makefile's PKGS line and its allocator (MALLOC, jemalloc),
    by the package owning its .pc file, plus pkg-config and check (make unit, run by the package
    build); nothing else but debhelper."""
    control = (ROOT / "debian" / "control").read_text()
    m = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S)
    assert m
    lines = [ln for ln in m.group(1).splitlines() if not ln.lstrip().startswith("#")]
    deps = {re.split(r"[\s(<]", d.strip())[0] for d in " ".join(lines).split(",") if d.strip()}
    want = {"debhelper-compat", "pkg-config", "check"}
    assert makefile_var("MALLOC") == "jemalloc"
    for module in makefile_var("PKGS").split() + ["jemalloc"]:
        pc = run(["pkg-config", "--path", module]).stdout.strip()
        owner = run(["dpkg", "-S", pc]).stdout.split(":")[0]
        want.add(owner)
    assert deps == want


def test_contents(deb):
    files = contents(deb)
    expected = {
        "usr/bin/waguard": "-rwxr-xr-x",
        "usr/bin/waguardctl": "-rwxr-xr-x",
        "usr/share/man/man8/waguardctl.8.gz": "-rw-r--r--",
        "lib/systemd/system/waguard.service": "-rw-r--r--",
        "lib/systemd/system/waguard.socket": "-rw-r--r--",
        "lib/systemd/system/waguard.service.d/debian.conf": "-rw-r--r--",
        "etc/waguard/waguard.conf.example": "-rw-r--r--",
        "usr/share/man/man8/waguard.8.gz": "-rw-r--r--",
        "usr/share/doc/waguard/copyright": "-rw-r--r--",
        "usr/share/doc/waguard/changelog.gz": "-rw-r--r--",
        "usr/share/doc/waguard/README.md.gz": "-rw-r--r--",
        "usr/share/doc/waguard/DEPLOYING.md.gz": "-rw-r--r--",
        # Copied into place as they are: not compressed.
        "usr/share/doc/waguard/waguard.conf": "-rw-r--r--",
        "usr/share/doc/waguard/waguard.cloud.conf": "-rw-r--r--",
        "usr/share/doc/waguard/redis-waguard.conf": "-rw-r--r--",
        "usr/share/doc/waguard/nginx-waguard.conf": "-rw-r--r--",
        "usr/share/doc/waguard/waguard.rules.yml": "-rw-r--r--",
        "usr/share/doc/waguard/grafana-waguard.json": "-rw-r--r--",
        "usr/share/lintian/overrides/waguard": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert path in files, "%s is not in the package" % path
        assert files[path][0] == mode, (path, files[path])
    regular = {p for p, (mode, _) in files.items() if not mode.startswith("d")}
    assert regular == set(expected), "unexpected files: %s" % sorted(regular - set(expected))
    # The example files are the repository's, byte for byte.
    assert files["usr/share/doc/waguard/waguard.rules.yml"][1] == \
        (ROOT / "deploy" / "waguard.rules.yml").stat().st_size
    assert files["etc/waguard/waguard.conf.example"][1] == (ROOT / "deploy" / "waguard.conf").stat().st_size


def test_control_fields(deb):
    assert deb_field(deb, "Package") == "waguard"
    depends = deb_field(deb, "Depends")
    for lib in ("libevent-2.1-7", "libevent-openssl-2.1-7", "libhiredis0.14", "libcjson1",
                "libinih1", "libsystemd0", "libssl3", "libjemalloc2", "libc6"):
        assert lib in depends, "Depends lacks %s: %s" % (lib, depends)
    assert "redis-server" in deb_field(deb, "Recommends")
    # No system user: the unit runs waguard with DynamicUser=, so no adduser either.
    assert "adduser" not in depends
    unit = (ROOT / "systemd" / "waguard.service").read_text()
    assert re.search(r"^DynamicUser=yes$", unit, re.M)


def test_conffiles_and_maintainer_scripts(deb):
    assert control_member(deb, "conffiles").split() == ["/etc/waguard/waguard.conf.example"]
    postinst = control_member(deb, "postinst")
    # Enabled at installation and started (restarted on upgrade) the Debian way.
    assert "deb-systemd-helper enable 'waguard.service'" in postinst
    assert re.search(r"deb-systemd-invoke \$_dh_action 'waguard.service'", postinst)
    # The socket is the operator's choice: never started by the package (that it is not
    # enabled either is checked by the installation below).
    assert not [ln for ln in postinst.splitlines() if "deb-systemd-invoke" in ln and "socket" in ln]
    # Nothing writes the operator's configuration.
    assert "waguard.conf" not in postinst
    postrm = control_member(deb, "postrm")
    purge = postrm.split('if [ "$1" = "purge" ]; then', 1)[1].split("fi", 1)[0]
    assert 'rm -f "${DPKG_ROOT:-}/etc/waguard/waguard.conf"' in purge
    assert "deb-systemd-helper purge 'waguard.service'" in postrm
    for script in ("postinst", "postrm", "prerm"):
        text = control_member(deb, script)
        assert text.startswith("#!/bin/sh\nset -e") or "\nset -e\n" in text, script
        run(["sh", "-n", "-c", text])


def test_lintian_reports_no_errors_or_warnings(deb):
    changes = BUILD / "deb" / ("waguard_%s_%s.changes" % (VERSION, deb_field(deb, "Architecture")))
    res = run(["lintian", "--fail-on", "error,warning", "--no-tag-display-limit", "--color", "never",
               str(changes)], check=False)
    tags = [ln for ln in res.stdout.splitlines() if re.match(r"^[EW]: ", ln)]
    assert res.returncode == 0 and not tags, res.stdout + res.stderr
    # Every override is justified: each group of overrides (lines without a blank line
    # between them) starts with a comment.
    for f in (ROOT / "debian").glob("*lintian-overrides"):
        for block in re.split(r"\n\s*\n", f.read_text()):
            lines = [ln for ln in block.splitlines() if ln.strip()]
            if any(not ln.startswith("#") for ln in lines):
                assert lines[0].startswith("#"), "%s: override without a comment: %s" % (f.name, block)


def test_deployment_notes_name_the_package_steps_and_the_readme_points_to_them():
    """The package ships deploy/DEPLOYING.md as the deployment notes, which start with the
    newcomer's steps on a fresh machine (the Cloud example first); the README, what a user
    reads first, sends them there."""
    notes = (ROOT / "deploy" / "DEPLOYING.md").read_text()
    steps = notes[:notes.index("### 1.")]
    for step in ("make deb", "apt install ./build/waguard_*.deb",
                 "cp /usr/share/doc/waguard/waguard.cloud.conf /etc/waguard/waguard.conf",
                 "cp /etc/waguard/waguard.conf.example /etc/waguard/waguard.conf",
                 "systemctl start waguard"):
        assert step in steps, step
    assert steps.index("waguard.cloud.conf") < steps.index("waguard.conf.example"), "the Cloud comes first"
    dropin = (ROOT / "debian" / "waguard-wait-for-configuration.conf").read_text()
    assert "ConditionPathExists=/etc/waguard/waguard.conf\n" in dropin
    assert "ConditionPathExists=/etc/waguard/waguard.conf" in notes
    assert "](deploy/DEPLOYING.md)" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------ a throw-away root


class Root:
    """A directory dpkg installs into (see the module's docstring)."""

    def __init__(self, path, deb):
        self.path = path
        self.admin = path / "var" / "lib" / "dpkg"
        for d in ("info", "updates", "triggers"):
            (self.admin / d).mkdir(parents=True)
        (self.admin / "available").touch()
        (path / "var" / "log").mkdir()
        self._seed(deb)
        # debhelper 13.11's restart snippet and postrm call systemctl and
        # deb-systemd-invoke whenever this machine runs systemd, DPKG_ROOT or not: these
        # stand-ins keep the scripts away from this machine's services.
        self.bin = path.parent / "stubs"
        self.bin.mkdir()
        for tool in ("systemctl", "deb-systemd-invoke"):
            stub = self.bin / tool
            stub.write_text("#!/bin/sh\necho \"%s $*\" >> \"%s\"\n" % (tool, path.parent / "stubs.log"))
            stub.chmod(0o755)

    def _seed(self, deb):
        """This machine's status records of the packages waguard depends on (with empty
        file lists), so dpkg checks the dependencies against them."""
        names = {re.split(r"[\s(:]", d.strip())[0]
                 for d in deb_field(deb, "Depends").replace("|", ",").split(",") if d.strip()}
        host = Path("/var/lib/dpkg/status").read_text().split("\n\n")
        keep = []
        for stanza in host:
            m = re.search(r"^Package: (\S+)$", stanza, re.M)
            if m and m.group(1) in names and re.search(r"^Status: install ok installed$", stanza, re.M):
                keep.append(stanza.strip("\n"))
                arch = re.search(r"^Architecture: (\S+)$", stanza, re.M).group(1)
                (self.admin / "info" / ("%s.list" % m.group(1))).touch()
                (self.admin / "info" / ("%s:%s.list" % (m.group(1), arch))).touch()
        (self.admin / "status").write_text("\n\n".join(keep) + "\n\n")

    def dpkg(self, *args, check=True):
        cmd = ["dpkg", "--root=%s" % self.path, "--force-script-chrootless",
               "--log=%s" % self.p("/var/log/dpkg.log")]
        if os.geteuid() != 0:
            cmd.append("--force-not-root")
        env = dict(os.environ, PATH="%s:%s" % (self.bin, os.environ.get("PATH", "/usr/bin:/bin")))
        return run(cmd + list(args), check=check, env=env)

    def status(self):
        res = run(["dpkg-query", "--admindir=%s" % self.admin, "-W",
                   "-f=${db:Status-Abbrev}|${Version}", "waguard"], check=False)
        return res.stdout.strip() if res.returncode == 0 else "not-known"

    def p(self, path):
        return self.path / path.lstrip("/")

    def is_enabled(self, unit):
        return run(["systemctl", "--root=%s" % self.path, "is-enabled", unit], check=False).stdout.strip()

    def start_conditions_met(self):
        """The unit's conditions as systemd loads them from the root (drop-ins included),
        each evaluated against the root's files by systemd itself."""
        res = run(["systemd-analyze", "--root=%s" % self.path, "condition", "--unit=waguard.service"],
                  check=False)
        conds = re.findall(r"(Condition\w+)=(\S+) (?:succeeded|failed)", res.stdout + res.stderr)
        assert conds, "waguard.service has no start condition: %s" % (res.stdout + res.stderr)
        for name, arg in conds:
            neg = arg.startswith("!")
            path = arg.lstrip("!")
            expr = "%s=%s%s" % (name, "!" if neg else "", self.p(path) if path.startswith("/") else path)
            if run(["systemd-analyze", "condition", expr], check=False).returncode != 0:
                return False
        return True


def repack(deb, tmp, version, conffile_extra):
    """The package again as `version`, its example configuration changed (an upgrade)."""
    tree = tmp / ("pkg-" + version)
    run(["dpkg-deb", "--raw-extract", str(deb), str(tree)])
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"^Version: .*$", "Version: " + version, control.read_text(), flags=re.M))
    conf = tree / "etc" / "waguard" / "waguard.conf.example"
    conf.write_text(conf.read_text() + conffile_extra)
    md5 = run(["md5sum", "etc/waguard/waguard.conf.example"], cwd=tree).stdout
    sums = [ln for ln in (tree / "DEBIAN" / "md5sums").read_text().splitlines()
            if not ln.endswith(" etc/waguard/waguard.conf.example")]
    (tree / "DEBIAN" / "md5sums").write_text("\n".join(sums + [md5.strip()]) + "\n")
    out = tmp / ("waguard_%s.deb" % version)
    run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)])
    return out


def test_install_configure_upgrade_remove_purge(deb, tmp_path):
    root = Root(tmp_path / "root", deb)

    # Install: the files, the unit enabled, the socket not, no configuration written.
    root.dpkg("--install", str(deb))
    assert root.status() == "ii |%s" % VERSION
    assert os.access(root.p("/usr/bin/waguard"), os.X_OK)
    assert run([str(root.p("/usr/bin/waguard")), "--version"]).stdout.strip() == "waguard " + VERSION
    example = root.p("/etc/waguard/waguard.conf.example")
    assert example.read_bytes() == (ROOT / "deploy" / "waguard.conf").read_bytes()
    conf = root.p("/etc/waguard/waguard.conf")
    assert not conf.exists()
    assert root.is_enabled("waguard.service") == "enabled"
    assert root.p("/etc/systemd/system/multi-user.target.wants/waguard.service").is_symlink()
    assert root.is_enabled("waguard.socket") == "disabled"
    # Not started before the configuration is written: the start condition fails.
    assert not root.start_conditions_met()

    # The operator writes the configuration (the example, edited) and the credentials it
    # names; it checks, and the unit may start.
    text = example.read_text().replace("url = https://127.0.0.1:9090", "url = https://10.0.0.7:9090")
    assert text != example.read_text()
    conf.write_text(text)
    creds = tmp_path / "credstore"
    creds.mkdir()
    for name in ("waba_password", "api_tokens", "admin_tokens", "webhook_token"):
        (creds / name).write_text("ops:secret-%s\n" % name)
    res = run([str(root.p("/usr/bin/waguard")), "--config", str(conf), "--check-config"], check=False,
              env=dict(os.environ, CREDENTIALS_DIRECTORY=str(creds)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert root.start_conditions_met()
    # The operator also edits the shipped example (a conffile).
    example.write_text(example.read_text() + "; edited by the operator\n")
    edited_example = example.read_bytes()

    # Upgrade to a version whose example changed: both edits survive (dpkg keeps the
    # edited conffile with --force-confold, as apt does non-interactively, and puts the
    # new one beside it); the unit stays enabled.
    newer = repack(deb, tmp_path, VERSION + "+1", "; new in the upgrade\n")
    root.dpkg("--force-confold", "--install", str(newer))
    assert root.status() == "ii |%s+1" % VERSION
    assert conf.read_text() == text
    assert example.read_bytes() == edited_example
    dist = root.p("/etc/waguard/waguard.conf.example.dpkg-dist")
    assert dist.read_text().endswith("; new in the upgrade\n")
    assert root.is_enabled("waguard.service") == "enabled"

    # Remove: the program goes, the configuration stays.
    root.dpkg("--remove", "waguard")
    assert root.status() == "rc |%s+1" % VERSION
    assert not root.p("/usr/bin/waguard").exists()
    assert not root.p("/lib/systemd/system/waguard.service").exists()
    assert conf.read_text() == text
    assert example.read_bytes() == edited_example

    # Purge: the configuration goes too, and the unit's enablement.
    root.dpkg("--purge", "waguard")
    assert root.status() in ("not-known", "un |", "pn |")
    assert not root.p("/etc/waguard").exists(), sorted(os.listdir(root.p("/etc/waguard")))
    assert not root.p("/etc/systemd/system/multi-user.target.wants/waguard.service").is_symlink()
    leftovers = [p for p in root.p("/var/lib/systemd/deb-systemd-helper-enabled").rglob("*")
                 if "waguard" in p.name]
    assert not leftovers, leftovers
