"""levent's typing and documentation contract: the stubs are checked against the runtime (stubtest),
typed programs using the public API pass ``mypy --strict``, and every public class, function and
method has a docstring.

New private modules need nothing here: stubtest walks every module of the package (a .pyx without a
.pyi next to it fails test_every_extension_has_a_stub), and a new public name is checked by
test_public_api_has_docstrings as soon as levent, levent.loop or levent.proxy exports it.
"""
import importlib
import inspect
import os
import shutil
import subprocess
import sys

import pytest

import levent

HERE = os.path.dirname(os.path.abspath(__file__))
TYPING = os.path.join(HERE, "typing")
ROOT = os.path.dirname(HERE)
PACKAGE = os.path.dirname(os.path.abspath(levent.__file__))
# Typed programs checked with mypy --strict: the API exercise and the user guide's examples.
STRICT_PROGRAMS = [os.path.join(TYPING, "api_usage.py"), os.path.join(PACKAGE, "examples.py")] + sorted(
    os.path.join(ROOT, "docs", "examples", name)
    for name in (os.listdir(os.path.join(ROOT, "docs", "examples"))
                 if os.path.isdir(os.path.join(ROOT, "docs", "examples")) else ())
    if name.endswith(".py"))
PUBLIC_MODULES = ["levent", "levent.loop", "levent.proxy"]


def _env():
    """The environment of a child Python that imports the levent these tests import (the children run
    in a temporary folder, where a relative PYTHONPATH=src would not find it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(PACKAGE)] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _mypy_env():
    """As _env(), and mypy must find that levent's stubs: an installed levent is found by mypy itself
    (it runs on the same interpreter); a source tree (PYTHONPATH=src) goes on MYPYPATH."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install 'levent[test]' adds it)")
    env = _env()
    parent = os.path.dirname(PACKAGE)
    if os.path.basename(parent) not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = parent
    return env


def _run(cmd, env, cwd):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    return proc.returncode, (proc.stdout + proc.stderr)[-20000:]


def test_mypy_strict_on_typed_programs(tmp_path):
    env = _mypy_env()
    # Copies, so that mypy takes each program as a top-level script and levent from where it is found.
    files = []
    for path in STRICT_PROGRAMS:
        target = tmp_path / ("example_" + os.path.basename(path) if path.startswith(PACKAGE) else os.path.basename(path))
        shutil.copy(path, target)
        files.append(str(target))
    rc, out = _run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"),
                    "--no-error-summary", *files], env, tmp_path)
    assert rc == 0, out


def test_api_usage_program_runs(tmp_path):
    # The typed program is a real one: it must work, not only type-check.
    rc, out = _run([sys.executable, os.path.join(TYPING, "api_usage.py")], _env(), tmp_path)
    assert rc == 0, out
    assert "api_usage: ok" in out


def test_stubtest(tmp_path):
    env = _mypy_env()
    allowlists = [os.path.join(TYPING, "stubtest-allowlist.txt")]
    if sys.version_info < (3, 12):
        allowlists.append(os.path.join(TYPING, "stubtest-allowlist-before-3.12.txt"))
    import mypy.version

    if int(mypy.version.__version__.split(".")[0]) < 2 and sys.version_info < (3, 11):
        allowlists.append(os.path.join(TYPING, "stubtest-allowlist-mypy1.txt"))
    cmd = [sys.executable, "-m", "mypy.stubtest", "levent",
           "--mypy-config-file", os.path.join(TYPING, "stubtest-mypy.ini")]
    for path in allowlists:
        cmd += ["--allowlist", path]
    rc, out = _run(cmd, env, tmp_path)
    assert rc == 0, out


def test_every_extension_has_a_stub():
    # stubtest reports a module without stubs too, but this names the fix.
    missing = sorted(name for name in os.listdir(PACKAGE)
                     if name.endswith((".so", ".pyd")) and not os.path.exists(
                         os.path.join(PACKAGE, name.split(".")[0] + ".pyi")))
    assert not missing, f"write a .pyi stub next to each of: {missing}"


def _public_objects():
    """(qualified name, object) for every public class, function, method and property."""
    seen = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        yield module_name, module
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or callable(obj)) or id(obj) in seen:
                continue        # constants: documented where they are defined
            seen.add(id(obj))
            qualname = f"{module_name}.{name}"
            yield qualname, obj
            if inspect.isclass(obj):
                # levent's own bases too (EventLoop's LoopCore and socket mixin), not asyncio's or object's.
                own = {}
                for cls in reversed(obj.__mro__):
                    if cls.__module__.startswith("levent"):
                        own.update(vars(cls))
                for attr, value in own.items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    if attr == "__init__" and not inspect.isfunction(value):
                        continue        # a C slot: the class docstring documents the construction
                    if not getattr(value, "__module__", "levent").startswith("levent"):
                        continue        # asyncio's own methods, reused (create_unix_server...)
                    if isinstance(value, (int, str, float, tuple)) or value is None:
                        continue        # class constants (BufferEvent.READING...) and dataclass fields
                    if attr == "__init__":
                        continue        # Python __init__: the class docstring says how to build one
                    yield f"{qualname}.{attr}", value


def test_public_api_has_docstrings():
    missing = []
    for qualname, obj in _public_objects():
        doc = obj.__doc__ if not isinstance(obj, (staticmethod, classmethod)) else obj.__func__.__doc__
        if not (doc or "").strip():
            missing.append(qualname)
    assert not missing, f"public API without a docstring: {missing}"


def test_docstring_walk_sees_the_api():
    # The walk above must reach methods and properties, or it would pass on nothing.
    names = {qualname for qualname, _ in _public_objects()}
    for expected in ("levent.EventBase.loop", "levent.Event.add", "levent.Buffer.readln",
                     "levent.BufferEvent.input", "levent.Listener.enable", "levent.TLSSession.do_handshake",
                     "levent.EventLoop.add_signal_handler", "levent.proxy.Proxy.shutdown", "levent.run"):
        assert expected in names, expected


DOC_EXAMPLES = [p for p in STRICT_PROGRAMS if os.sep + "docs" + os.sep in p]


@pytest.mark.parametrize("path", DOC_EXAMPLES, ids=os.path.basename)
def test_user_guide_example_runs(path, tmp_path):
    # The user guide (docs/guide.rst) includes these files: each must run to its final assert.
    rc, out = _run([sys.executable, path], _env(), tmp_path)
    assert rc == 0, out


def test_user_guide_examples_found():
    assert len(DOC_EXAMPLES) >= 5, DOC_EXAMPLES


# -- constructors: stubtest cannot see them --------------------------------------------------------
# A cdef class's __init__ (and __new__, which runs __cinit__) is a slot wrapper whose signature reads
# (*args, **kwargs) at runtime, and Cython's embedded class signature misplaces keyword-only markers,
# so stubtest compares nothing there. This compares each stub's __init__/__new__ with the source.

SOURCE = os.path.join(ROOT, "src", "levent")


def _source_constructors(path):
    """{class name: [(name, kind, has_default)]} for each cdef class's __init__ (else __cinit__)."""
    import re

    with open(path) as f:
        text = f.read()
    found = {}
    # A class's body: up to the next top-level class or function (docstrings may have unindented lines).
    for match in re.finditer(r"^cdef class (\w+)[^\n]*:\n(.*?)(?=^(?:cdef class|class|def|cdef|cpdef) |\Z)",
                             text, re.M | re.S):
        body = match.group(2)
        for method in ("__init__", "__cinit__"):
            sig = re.search(r"^    def %s\(self,?(.*?)\):" % method, body, re.M | re.S)
            if sig:
                break
        else:
            continue
        params, kind = [], "positional"
        for raw in (p.strip() for p in sig.group(1).replace("\n", " ").split(",")):
            if not raw:
                continue
            if raw == "*":
                kind = "keyword"
                continue
            name_part, _, default = raw.partition("=")
            name = name_part.replace(" not None", "").split()[-1]
            if name.startswith("**"):
                params.append((name[2:], "**", False))
            elif name.startswith("*"):
                params.append((name[1:], "*", False))
                kind = "keyword"
            else:
                params.append((name, kind, bool(default.strip())))
        if params == [("args", "*", False), ("kwargs", "**", False)]:
            continue        # takes anything: nothing to compare
        found[match.group(1)] = params
    return found


def _stub_constructors(path):
    import ast

    with open(path) as f:
        tree = ast.parse(f.read())
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
        func = methods.get("__init__") or methods.get("__new__")
        if func is None:
            found[node.name] = []
            continue
        a = func.args
        positional = (a.posonlyargs + a.args)[1:]       # without self / cls
        first_default = len(positional) - len(a.defaults)
        params = [(p.arg, "positional", i >= first_default) for i, p in enumerate(positional)]
        if a.vararg:
            params.append((a.vararg.arg, "*", False))
        params += [(p.arg, "keyword", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
        if a.kwarg:
            params.append((a.kwarg.arg, "**", False))
        found[node.name] = params
    return found


def _pyx_modules():
    if not os.path.isdir(SOURCE):
        return []
    return sorted(name[:-4] for name in os.listdir(SOURCE) if name.endswith(".pyx"))


@pytest.mark.skipif(not _pyx_modules(), reason="needs the source tree (src/levent/*.pyx)")
@pytest.mark.parametrize("module", _pyx_modules())
def test_stub_constructors_match_source(module):
    stub_path = os.path.join(SOURCE, module + ".pyi")
    assert os.path.exists(stub_path), f"write {module}.pyi next to {module}.pyx"
    source = _source_constructors(os.path.join(SOURCE, module + ".pyx"))
    stubs = _stub_constructors(stub_path)
    wrong = {name: {"source": params, "stub": stubs.get(name)}
             for name, params in source.items() if not name.startswith("_") and stubs.get(name) != params}
    assert not wrong, f"{module}.pyi constructors differ from {module}.pyx: {wrong}"


def test_source_constructor_parser():
    # The comparison above must actually parse signatures, or it would pass on nothing.
    core = _source_constructors(os.path.join(SOURCE, "_core.pyx"))
    assert core["Timer"] == [("base", "positional", False), ("callback", "positional", False),
                             ("args", "*", False), ("persist", "keyword", True)]
    assert core["EventBase"][0] == ("method", "keyword", True)
    listener = _source_constructors(os.path.join(SOURCE, "_listener.pyx"))     # the file's last class
    assert listener["Listener"][3] == ("sock", "keyword", True)
