"""pytest plugin loaded by ci/test.sh (-p levent_ci_plugin).

After collection (so after every test module and conftest has imported what it imports), prints
where `levent` was imported from and stops the run unless that is the venv's site-packages: the tests
must exercise the installed wheel, never the source tree's src/levent.
"""
import os
import sys
import sysconfig

import pytest


def pytest_collection_finish(session):
    levent = sys.modules.get("levent")
    if levent is None:
        import levent
    where = os.path.realpath(levent.__file__)
    dirs = sorted({os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"levent under test: {levent.__file__}")
    if not any(where.startswith(d + os.sep) for d in dirs):
        raise pytest.UsageError(f"levent was imported from {where}, not from the venv's site-packages {dirs}")
