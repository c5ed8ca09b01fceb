"""Sphinx configuration of levent's documentation (built by ci/docs.sh against the installed levent)."""
import ast
import os

import levent

project = "levent"
author = "levent founders"
release = version = levent.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
# No network at build time: intersphinx gets no inventories, so references to Python's own objects
# stay plain text instead of failing.
intersphinx_mapping = {}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
html_theme = "alabaster"
exclude_patterns = ["_build"]
nitpicky = True
# Types named in the stubs' signatures that have no page here (Python's own, and the stubs' private
# aliases).
nitpick_ignore_regex = [
    ("py:.*", r"(asyncio|socket|ssl|logging|argparse|contextvars|collections\.abc|typing|_typeshed)\..*"),
    ("py:class", r"levent\.[a-z_.]*\._[A-Za-z]+"),
    ("py:class", r"_[A-Za-z]+"),
    ("py:class", r"(bytes|int|str|float|bool|object|memoryview|tuple|list|dict|type|OSError|None)"),
]


def _stub_signatures():
    """{'levent._core.EventBase.loop': (args, returns)} from the .pyi stubs next to the modules.

    Cython's embedded signatures lose the annotations and misplace keyword-only markers in class
    docstrings, so the documented signatures come from the stubs, which stubtest checks."""
    package = os.path.dirname(levent.__file__)
    found = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.If):          # version guards
                visit(node.body, prefix)
            elif isinstance(node, ast.FunctionDef) and prefix + node.name not in found:
                args = node.args
                if prefix and not any(isinstance(d, ast.Name) and d.id == "staticmethod"
                                      for d in node.decorator_list):
                    args = ast.arguments(posonlyargs=args.posonlyargs[1:], args=args.args[1:] if not args.posonlyargs else args.args,
                                         vararg=args.vararg, kwonlyargs=args.kwonlyargs,
                                         kw_defaults=args.kw_defaults, kwarg=args.kwarg,
                                         defaults=args.defaults)
                found[prefix + node.name] = (
                    f"({ast.unparse(args)})", ast.unparse(node.returns) if node.returns else None)

    for name in sorted(os.listdir(package)):
        if name.endswith(".pyi"):
            with open(os.path.join(package, name)) as f:
                visit(ast.parse(f.read()).body, "levent." + name[:-4] + ".")
    return found


STUBS = _stub_signatures()


def _signature_from_stub(app, what, name, obj, options, signature, return_annotation):
    if what == "class":
        qualname = f"{obj.__module__}.{obj.__qualname__}"
        for init in ("__init__", "__new__"):
            if f"{qualname}.{init}" in STUBS:
                return STUBS[f"{qualname}.{init}"][0], None
        return None
    if what in ("method", "function", "staticmethod", "classmethod"):
        owner = getattr(obj, "__objclass__", None)
        module = getattr(owner, "__module__", None) or getattr(obj, "__module__", None)
        key = f"{module}.{getattr(obj, '__qualname__', '')}"
        if key in STUBS:
            return STUBS[key]
    return None


def setup(app):
    app.connect("autodoc-process-signature", _signature_from_stub)
