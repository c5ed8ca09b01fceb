"""The loops the benchmark compares, declared once.

Every loop runs the loop workloads (``levent.bench.loops``); an asyncio-compatible one also gets two
echo contenders, ``NAME-protocol`` and ``NAME-streams`` (``levent.bench.servers``). levent's own
asyncio loop joins with one entry in LOOPS below; other kinds of echo contenders (C programs, the
proxy, HTTP) go through ``levent.bench.echo.register``.
"""
import importlib
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Loop:
    name: str
    label: str
    factory: str  # "module:callable" returning a new loop; imported in the worker or server process
    requires: Optional[str] = None  # a module that must import, else the loop is skipped, saying why
    asyncio: bool = True  # an asyncio event loop (create_server, streams), not just call_soon/call_later
    install: str = ""  # how to get ``requires``, for the skip message


LOOPS: Dict[str, Loop] = {loop.name: loop for loop in (
    Loop("levent", "levent raw API (EventBase)", "levent.bench.loops:LeventLoop", "levent", asyncio=False),
    Loop("levent-asyncio", "levent asyncio loop", "levent:new_event_loop"),
    Loop("asyncio", "asyncio", "asyncio:new_event_loop"),
    Loop("uvloop", "uvloop", "uvloop:new_event_loop", "uvloop", install="; pip install levent[bench] adds it"),
    Loop("selectors", "pure-Python selectors loop", "levent.bench.loops:SelectorsLoop", asyncio=False),
)}


def new_loop(name):
    module, _, attr = LOOPS[name].factory.partition(":")
    return getattr(importlib.import_module(module), attr)()


def missing(name):
    """None when the loop can run here, else why not."""
    loop = LOOPS[name]
    if loop.requires:
        try:
            importlib.import_module(loop.requires)
        except Exception as exc:
            return f"{loop.requires} is not importable ({type(exc).__name__}: {exc}){loop.install}"
    return None

