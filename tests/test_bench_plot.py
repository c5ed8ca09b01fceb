"""levent.bench.plot: the benchmark suite's plot, SVG from the stdlib and PNG through matplotlib."""
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from levent.bench.plot import PALETTE, render_svg, write_plot

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def result(cpu, req):
    return {"cpu_us_per_echo": cpu, "cpu_us_per_echo_min": cpu * 0.9,
            "cpu_us_per_echo_max": cpu * 1.1,
            "req_s": req, "req_s_min": req * 0.95, "req_s_max": req * 1.05}


def sample():
    """3 contenders, 2 cells; 'asyncio' is missing from the second cell."""
    return {
        "title": "levent bench: TCP echo on 127.0.0.1",
        "subtitle": "Linux x86_64, 2 CPUs, Python 3.11.7, libevent 2.1.12",
        "contenders": [{"name": "c-raw", "label": "C libevent, recv/send (ceiling)"},
                       {"name": "levent", "label": "levent raw API"},
                       {"name": "asyncio", "label": "asyncio default loop"}],
        "cells": [
            {"size": 64, "conns": 1, "results": {"c-raw": result(5.1, 180000.0),
                                                 "levent": result(5.3, 170000.0),
                                                 "asyncio": result(21.0, 45000.0)}},
            {"size": 102400, "conns": 100, "results": {"c-raw": result(40.0, 1200000.0),
                                                       "levent": result(44.0, 1100000.0)}},
        ],
    }


def parse(svg):
    return ET.fromstring(svg.encode("utf-8"))


def panels(root):
    """{(metric, cell title): panel element}."""
    return {(g.get("data-metric"), g.get("data-cell")): g
            for g in root.iter(SVG + "g") if g.get("class") == "panel"}


def bars(element):
    return [r for r in element.iter(SVG + "rect") if r.get("class") == "bar"]


def texts(element):
    return [t.text for t in element.iter(SVG + "text")]


def test_one_bar_per_metric_cell_and_present_contender():
    root = parse(render_svg(sample()))
    assert root.tag == SVG + "svg" and root.get("width") == "1400"
    got = panels(root)
    assert sorted(got) == sorted((m, c) for m in ("cpu_us_per_echo", "req_s")
                                 for c in ("64 B × 1 conn", "100 KiB × 100 conns"))
    assert len(bars(root)) == 2 * (3 + 2)
    for metric in ("cpu_us_per_echo", "req_s"):
        assert [b.get("data-contender") for b in bars(got[metric, "64 B × 1 conn"])] == \
            ["c-raw", "levent", "asyncio"]
        # asyncio is missing from this cell: no bar, and the others keep their slots
        assert [b.get("data-contender") for b in bars(got[metric, "100 KiB × 100 conns"])] == \
            ["c-raw", "levent"]


def test_values_are_recoverable_from_bars():
    root = parse(render_svg(sample()))
    got = panels(root)
    cpu = {b.get("data-contender"): b for b in bars(got["cpu_us_per_echo", "64 B × 1 conn"])}
    assert float(cpu["levent"].get("data-value")) == 5.3
    assert cpu["levent"].find(SVG + "title").text.startswith(
        "levent raw API, 64 B × 1 conn: 5.30 µs/echo (min 4.77, max 5.83)")
    req = {b.get("data-contender"): b for b in bars(got["req_s", "100 KiB × 100 conns"])}
    assert float(req["c-raw"].get("data-value")) == 1200000.0
    assert req["c-raw"].find(SVG + "title").text.startswith(
        "C libevent, recv/send (ceiling), 100 KiB × 100 conns: 1,200,000 req/s")


def test_bar_heights_follow_values_within_a_panel():
    root = parse(render_svg(sample()))
    for panel in panels(root).values():
        pairs = [(float(b.get("data-value")), float(b.get("height"))) for b in bars(panel)]
        by_value = sorted(pairs)
        assert sorted(pairs, key=lambda p: p[1]) == by_value
        # heights are proportional to values: the y-axis starts at 0
        ratios = [h / v for v, h in pairs]
        assert max(ratios) - min(ratios) < 0.01 * max(ratios)


def test_colors_are_per_contender_and_match_the_legend():
    data = sample()
    data["contenders"] += [{"name": f"x{i}", "label": f"x{i}"} for i in range(len(PALETTE))]
    root = parse(render_svg(data))
    swatches = [r.get("fill") for r in root.iter(SVG + "rect") if r.get("class") == "swatch"]
    assert swatches == [PALETTE[i % len(PALETTE)] for i in range(len(data["contenders"]))]
    names = [c["name"] for c in data["contenders"]]
    for b in bars(root):
        assert b.get("fill") == swatches[names.index(b.get("data-contender"))]


def test_axis_ticks_are_nice_numbers():
    got = panels(parse(render_svg(sample())))
    assert {"0", "50k", "100k", "150k", "200k"} <= set(texts(got["req_s", "64 B × 1 conn"]))
    assert {"0", "500k", "1M", "1.5M"} <= set(texts(got["req_s", "100 KiB × 100 conns"]))
    assert {"0", "10", "20"} <= set(texts(got["cpu_us_per_echo", "64 B × 1 conn"]))


def test_incomplete_results_leave_gaps_without_crashing():
    data = sample()
    data["cells"] += [
        {"size": 1024, "conns": 10, "results": {}},  # every contender failed
        {"size": 1024, "conns": 100},  # no results at all
        # a metric missing, None, NaN; no min/max; a contender nobody listed
        {"size": 16384, "conns": 1, "results": {"c-raw": {"cpu_us_per_echo": 3.0, "req_s": None},
                                                "levent": {"req_s": float("nan")},
                                                "asyncio": {"cpu_us_per_echo": 9.0},
                                                "stranger": result(1.0, 1.0)}},
    ]
    root = parse(render_svg(data))
    got = panels(root)
    assert not bars(got["cpu_us_per_echo", "1 KiB × 10 conns"])
    assert "no data" in texts(got["req_s", "1 KiB × 100 conns"])
    assert [b.get("data-contender") for b in bars(got["cpu_us_per_echo", "16 KiB × 1 conn"])] == \
        ["c-raw", "asyncio"]
    assert not bars(got["req_s", "16 KiB × 1 conn"])
    assert len(bars(root)) == 2 * (3 + 2) + 2


def test_text_is_escaped():
    data = sample()
    data["title"] = "a <b> & c"
    data["contenders"][1]["label"] = 'levent "raw" & <fast>'
    svg = render_svg(data)
    root = parse(svg)
    assert "a <b> & c" in texts(root)
    assert 'levent "raw" & <fast>' in texts(root)
    tips = [b.find(SVG + "title").text for b in bars(root) if b.get("data-contender") == "levent"]
    assert tips and all(t.startswith('levent "raw" & <fast>, ') for t in tips)


def test_no_cells_says_no_results():
    data = sample()
    data["cells"] = []
    root = parse(render_svg(data))
    assert not bars(root) and not panels(root)
    assert "no results" in texts(root)
    assert "levent raw API" in texts(root)  # the legend still names the contenders
    parse(render_svg({}))  # nothing at all is still a plot


@pytest.mark.parametrize("name", ["plot.svg", "plot"])
def test_write_plot_svg(tmp_path, name):
    path = str(tmp_path / name)
    assert write_plot(path, sample()) == (path, None)
    with open(path, encoding="utf-8") as f:
        assert len(bars(parse(f.read()))) == 10
    assert os.listdir(tmp_path) == [name]


def test_write_plot_png_falls_back_to_svg_without_matplotlib(tmp_path, monkeypatch):
    # None in sys.modules makes the import fail, also when matplotlib is installed and imported
    for name in [m for m in sys.modules if m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    written, note = write_plot(str(tmp_path / "plot.png"), sample())
    assert written == str(tmp_path / "plot.svg")
    assert os.listdir(tmp_path) == ["plot.svg"]
    with open(written, encoding="utf-8") as f:
        assert len(bars(parse(f.read()))) == 10
    assert written in note and "pip install matplotlib" in note and "levent[plot]" in note


def test_module_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; import levent.bench.plot as p; "
            "assert 'matplotlib' not in vars(p)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_write_plot_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (optional: PNG output)")
    path = str(tmp_path / "plot.png")
    data = sample()
    data["contenders"][2]["label"] = "x$^$y & <z>"  # unescaped, "$^$" is invalid mathtext
    assert write_plot(path, data) == (path, None)
    with open(path, "rb") as f:
        head = f.read(24)
    assert head.startswith(PNG_SIGNATURE)
    width, _ = struct.unpack(">II", head[16:24])
    assert width == 1400
    data["cells"] = []
    assert write_plot(path, data) == (path, None)
