"""fastad/dot.py: Graphviz DOT text and rendering."""
import re
import shutil

import numpy as np
import pytest

import fastad.reference as ref
from fastad import dot
from fastad.dot import render, to_dot


def _core():
    import fastad
    return fastad


def seed(engine):
    x1, x2 = engine.Var(2.0), engine.Var(3.0)
    with engine.Tape():  # a fresh tape: the thread's implicit one may hold other rows
        z = x1 * x2 + engine.sin(x1)
    z.backward(retain_graph=True)
    return z


def test_nodes_and_edges(engine):
    src = to_dot(seed(engine))
    assert src.startswith("digraph fastad {\n") and src.rstrip().endswith("}")
    nodes = dict(re.findall(r'^  "(w\d+)" \[(.*)\];$', src, re.M))
    assert sorted(nodes) == ["w1", "w2", "w3", "w4", "w5"]
    assert 'label="w1 = x1\\ninput\\nvalue 2\\nadjoint 2.583853163"' in nodes["w1"]
    assert "shape=box" in nodes["w1"]
    assert 'label="w3 = w1 * w2\\nmul\\nvalue 6\\nadjoint 1"' in nodes["w3"]
    assert "sin(w1)\\nsin\\nvalue 0.9092974268" in nodes["w4"]
    assert "peripheries=2" in nodes["w5"]  # the output
    edges = re.findall(r'^  "(w\d+)" -> "(w\d+)" \[label="([^"]*)"\];$', src, re.M)
    assert sorted(edges) == sorted([
        ("w1", "w3", "3"), ("w2", "w3", "2"), ("w1", "w4", "-0.4161468365"),
        ("w3", "w5", "1"), ("w4", "w5", "1")])


def test_only_rows_the_output_reaches(engine):
    x = engine.Var(1.0)
    with engine.Tape():
        unused = engine.exp(x)
        y = x * x  # x read twice: two edges, each with its own partial
    y.backward(retain_graph=True)
    src = to_dot(y)
    assert "exp" not in src
    del unused
    assert src.count('"w1" -> "w3" [label="1"];') == 2


def test_before_backward_no_adjoints(engine):
    x = engine.Var(2.0)
    with engine.Tape():
        y = engine.log(x)
    src = to_dot(y)
    assert "adjoint" not in src
    assert '"w1" -> "w2" [label="0.5"];' in src


def test_leaf_and_labels(engine):
    leaf = engine.Var(4.0)
    src = to_dot(leaf)
    assert "value 4" in src and "leaf" in src
    assert "value array(2, 3)" in to_dot(engine.Array(np.ones((2, 3))))  # (float() of it raised)
    a = engine.Var(2.0)
    with engine.Tape():
        y = a * 3
    assert "w1 = a\\ninput" in to_dot(y, labels={"a": a})


def test_quoting():
    assert dot._quote('say "hi"\\n') == '"say \\"hi\\"\\\\n"'
    assert dot._quote("two\nlines") == '"two\\nlines"'


def test_render_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError) as info:
        render(seed(ref), tmp_path / "g.png")
    msg = str(info.value)
    assert "Graphviz" in msg
    assert "apt-get install graphviz" in msg and "brew install graphviz" in msg
    assert not (tmp_path / "g.png").exists()


def test_render_bad_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        render(seed(ref), tmp_path / "g.jpg")


def test_render_dot_failure(tmp_path, monkeypatch):
    false = shutil.which("false")  # a program that exits 1, standing in for a failing dot
    assert false is not None
    monkeypatch.setattr(shutil, "which", lambda name: false)
    with pytest.raises(RuntimeError, match="failed"):
        render(seed(ref), tmp_path / "g.svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
def test_render_png_and_svg(tmp_path, engine):
    z = seed(engine)
    png = render(z, tmp_path / "g.png")
    assert png == str(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    render(z, str(tmp_path / "g.SVG"))
    assert "<svg" in (tmp_path / "g.SVG").read_text()
