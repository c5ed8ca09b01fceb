"""Fixtures of the conformance suite: every test that takes ``loop`` (or ``loop_kind``,
``new_loop``, ``loop_factory``) runs twice, once on the reference and once on levent:

* ``asyncio``: ``asyncio.new_event_loop()``, the stdlib selector loop;
* ``levent``: ``levent.new_event_loop()``.

The parameter ids are those two words, so ``pytest tests/conformance -k asyncio`` (or ``-k levent``)
runs one side. No file, class or test name in this package contains either word, except
test_levent_only.py, whose tests run on levent only.

After a test that passed, the ``loop`` fixture closes its loop (cancelling leftover tasks first) and
fails the test if it left more fds open than there were before it started; after a module whose
tests all passed, no transport may be left open and no fd more than before it may be open.
"""
import asyncio
import gc

import pytest

import levent

from .util import TEST_TIMEOUT, open_fds, watchdog

LOOP_KINDS = ("asyncio", "levent")


def make_loop(kind):
    if kind == "asyncio":
        loop = asyncio.new_event_loop()
        assert isinstance(loop, asyncio.SelectorEventLoop), (
            f"asyncio.new_event_loop() made {loop!r}: an event loop policy leaked from another test")
        return loop
    factory = getattr(levent, "new_event_loop", None)
    if factory is None:
        pytest.fail("levent.new_event_loop does not exist (yet)", pytrace=False)
    return factory()


def loop_factory_of(kind):
    """The function that makes a new loop of this kind (for asyncio.run(loop_factory=...) etc.)."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    factory = getattr(levent, "new_event_loop", None)
    if factory is None:
        pytest.fail("levent.new_event_loop does not exist (yet)", pytrace=False)
    return factory


def finish_loop(loop):
    """Cancel what the test left on ``loop``, shut down its asyncgens and executor, close it."""
    if loop.is_closed():
        return
    if loop.is_running():
        raise AssertionError(f"{loop!r} is still running after the test")
    try:
        with watchdog(loop, TEST_TIMEOUT):
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait_for(
                    asyncio.gather(*tasks, return_exceptions=True), TEST_TIMEOUT))
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), TEST_TIMEOUT))
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), TEST_TIMEOUT))
    finally:
        loop.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "_conformance_rep_" + rep.when, rep)
    if rep.failed and item.module is not None:
        item.module._conformance_any_failed = True


def _passed(request):
    rep = getattr(request.node, "_conformance_rep_call", None)
    return rep is not None and rep.passed


def open_transports():
    """The transports alive in this process that are not closing."""
    return [o for o in gc.get_objects()
            if isinstance(o, asyncio.BaseTransport) and not _is_closing(o)]


def _is_closing(tr):
    try:
        return tr.is_closing()
    except Exception:
        return True


@pytest.fixture(scope="module", autouse=True)
def _module_leak_check(request):
    """After each test module (if all its tests passed): no more fds open than before it, and no
    transport left open."""
    gc.collect()
    fds_before = open_fds()
    transports_before = {id(t) for t in open_transports()}
    yield
    gc.collect()
    if getattr(request.module, "_conformance_any_failed", False):
        return  # a failed test may leave things open: its own failure says enough
    leaked_transports = [t for t in open_transports() if id(t) not in transports_before]
    fds_after = open_fds()
    problems = []
    if leaked_transports:
        problems.append(f"transports still open after the module: {leaked_transports!r}")
    if len(fds_after) > len(fds_before):
        new = {fd: fds_after[fd] for fd in sorted(set(fds_after) - set(fds_before))}
        problems.append(f"{len(fds_after) - len(fds_before)} more fds open after the module "
                        f"than before it (new: {new})")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    """'asyncio' or 'levent'."""
    return request.param


@pytest.fixture
def loop_factory(loop_kind):
    return loop_factory_of(loop_kind)


@pytest.fixture
def new_loop(loop_kind):
    """A factory of loops of this test's kind; every loop it made is closed after the test."""
    made = []

    def new():
        loop = make_loop(loop_kind)
        made.append(loop)
        return loop

    def finish_all():
        errors = []
        for loop in made:
            try:
                finish_loop(loop)
            except Exception as exc:  # keep closing the others
                errors.append(exc)
        if errors:
            raise errors[0]

    new.finish_all = finish_all
    try:
        yield new
    finally:
        finish_all()


@pytest.fixture
def loop(request, new_loop):
    """A new loop of this test's kind (not set as the current loop: the tests pass it explicitly or
    use asyncio.get_running_loop()); closed after the test, which must not leak fds."""
    asyncio.set_event_loop(None)
    gc.collect()
    before = open_fds()
    lp = new_loop()
    yield lp
    new_loop.finish_all()  # this one and any other the test made
    gc.collect()
    after = open_fds()
    if _passed(request) and len(after) > len(before):
        leaked = {fd: after[fd] for fd in sorted(set(after) - set(before))}
        pytest.fail(f"{len(after) - len(before)} more fds open after the test than before "
                    f"(new: {leaked})", pytrace=False)
