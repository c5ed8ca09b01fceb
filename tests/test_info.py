"""`python -m levent info`, run as a user would (a subprocess): every line it prints is checked against
what this test process itself loaded."""
import os
import ssl
import subprocess
import sys

import pytest

import levent
from levent import _core, _tls


def run_info(**env):
    # The child must import the same levent as this process (installed wheel or src/ on PYTHONPATH).
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(levent.__file__)))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("EVENT_")}
    child_env["PYTHONPATH"] = package_parent + os.pathsep + os.environ.get("PYTHONPATH", "")
    child_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "levent", "info"], env=child_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    rows = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(": ")
        assert sep, f"not a 'key: value' line: {line!r}"
        rows[key] = value.strip()
    return rows


def mapped_files():
    """The files mapped into this process (Linux)."""
    with open("/proc/self/maps") as maps:
        return {fields[5] for fields in (line.rstrip("\n").split(None, 5) for line in maps) if len(fields) == 6
                and fields[5].startswith("/")}


def test_versions_are_the_loaded_ones():
    rows = run_info()
    assert rows["levent"] == f"{levent.__version__} ({os.path.dirname(levent.__file__)})"
    version = levent.libevent_version()
    assert rows["libevent"] == f"{version.string} ({version.number:#010x})"
    assert rows["levent TLS OpenSSL"] == _tls._openssl_version()[0]
    assert rows["levent TLS OpenSSL"].startswith("OpenSSL ")
    assert rows["Python ssl OpenSSL"] == ssl.OPENSSL_VERSION
    assert rows["Python"].split()[1] == ".".join(map(str, sys.version_info[:3]))


@pytest.mark.parametrize("key, name", [("libevent library", "libevent"), ("levent TLS libssl", "libssl"),
                                       ("levent TLS libcrypto", "libcrypto")])
def test_library_paths_exist_and_are_the_loaded_ones(key, name):
    path = run_info()[key]
    assert os.path.isabs(path) and os.path.isfile(path), path
    assert os.path.basename(path).startswith(name), path
    # The child's library is the one this process runs on, found the same way.
    ours = {"libevent library": _core._libevent_path(), "levent TLS libssl": _tls._openssl_version()[1],
            "levent TLS libcrypto": _tls._openssl_version()[2]}[key]
    assert os.path.samefile(path, ours)
    if sys.platform.startswith("linux"):
        assert any(os.path.exists(m) and os.path.samefile(path, m) for m in mapped_files()), \
            f"{path} is not mapped into this process"


def test_backends():
    rows = run_info()
    methods = levent.supported_methods()
    listed = rows["backends"].split("), ")
    assert [entry.split(" (")[0] for entry in listed] == methods
    base = levent.EventBase()
    try:
        default = base.method
        flags = {f.name for f in levent.Feature if f & base.features}
    finally:
        base.close()
    name, _, features = rows["default backend"].partition(" (")
    assert name == default
    assert set(features.rstrip(")").split(", ")) == (flags or {"none"})
    assert "libevent environment" not in rows


def test_backend_disabled_by_environment():
    # libevent's default config honours EVENT_NO<METHOD>: info must say so, not fail.
    methods = levent.supported_methods()
    if len(methods) < 2:
        pytest.skip(f"needs two backends to disable one; this libevent has {methods}")
    variable = f"EVENT_NO{methods[0].upper()}"
    rows = run_info(**{variable: "1"})
    assert rows["backends"].startswith(f"{methods[0]} (unavailable)")
    assert rows["default backend"].split()[0] == methods[1]
    assert rows["libevent environment"] == f"{variable}=1"
