"""fastad/cli.py: ``python -m fastad explain`` parses safely, never evals."""
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fastad.cli
from fastad import cli
from fastad.cli import ExpressionError, evaluate, main, parse

# The folder holding the fastad these tests import: the source tree after an
# in-place build, site-packages after `pip install .` (see conftest.py).
PACKAGE_PARENT = Path(fastad.cli.__file__).resolve().parents[1]


@pytest.fixture(params=["core", "reference"])
def engine_flag(request):
    return ["--engine", request.param]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- what works -----------------------------------------------------------------

def test_explain_text(capsys, engine_flag):
    rc, out, err = run(capsys, "explain", "x1*x2 + sin(x1)", "x1=2", "x2=3", *engine_flag)
    assert rc == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[4].split()[:5] == ["w3", "w1", "*", "w2", "6"]
    assert "  ∂w5/∂x1 = 2.5838531634528574" in lines
    assert "  ∂w5/∂x2 = 2" in lines


def test_explain_json_and_markdown(capsys, engine_flag):
    rc, out, _ = run(capsys, "explain", "log(a) + a*b - sin(b)", "a=2", "b=5",
                     "--format", "json", *engine_flag)
    assert rc == 0
    data = json.loads(out)
    assert data["gradient"] == {"a": pytest.approx(5.5), "b": pytest.approx(1.7163378145367738)}
    assert [r["label"] for r in data["rows"] if r["op"] == "input"] == ["a", "b"]
    rc, out, _ = run(capsys, "explain", "x1*x2", "x1=2", "x2=3", "-f", "markdown", *engine_flag)
    assert rc == 0
    assert out.splitlines()[0].startswith("| name | label |")


def test_whitelisted_constructs(capsys, engine_flag):
    expr = ("-x + +y - 2*x/y + x**2 + 2**y + where(x > y, x, y) + clip(x, 0, 1)"
            " + maximum(x, y) + arctan2(x, y) + hypot(x, 1) + power(x, 3) + sigmoid(-x)"
            " + (x <= y) + (x == x) + (1 < x < 3)")
    rc, out, err = run(capsys, "explain", expr, "x=1.5", "y=-0.5", "--format", "json",
                       *engine_flag)
    assert rc == 0, err
    data = json.loads(out)
    assert set(data["gradient"]) == {"x", "y"}


def test_expression_starting_with_minus(capsys, engine_flag):
    rc, out, err = run(capsys, "explain", "-x1*x2", "x1=2", "x2=-3", *engine_flag)
    assert rc == 0, err
    assert "  ∂w4/∂x1 = 3" in out
    rc, out, err = run(capsys, "explain", "--format", "json", "--", "-x1", "x1=2", *engine_flag)
    assert rc == 0, err
    assert json.loads(out)["gradient"] == {"x1": -1.0}


def test_constants_follow_ieee(capsys, engine_flag):
    rc, out, err = run(capsys, "explain", "x*(1/0) + x*10**400 + (-8)**(1/3)*x", "x=1",
                       "--format", "json", *engine_flag)
    assert rc == 0, err
    assert json.loads(out)["rows"][-1]["value"] == "nan"


def test_dot_option(capsys, tmp_path, engine_flag):
    path = tmp_path / "g.dot"
    rc, out, err = run(capsys, "explain", "x*y", "x=2", "y=3", "--dot", str(path), *engine_flag)
    assert rc == 0, err
    src = path.read_text()
    assert src.startswith("digraph") and '"w1" -> "w3" [label="3"];' in src
    assert "w1 = x" in src


def test_dot_image_option(capsys, tmp_path, monkeypatch):
    if shutil.which("dot"):
        rc, _, err = run(capsys, "explain", "x*y", "x=2", "y=3", "--engine", "reference",
                         "--dot", str(tmp_path / "g.png"))
        assert rc == 0, err
        assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc, out, err = run(capsys, "explain", "x*y", "x=2", "y=3", "--engine", "reference",
                       "--dot", str(tmp_path / "h.svg"))
    assert rc == 1
    assert "w3" in out  # the trace still printed
    assert "install Graphviz" in err


def test_evaluate_and_parse_directly():
    import fastad.reference as ref

    assert evaluate("2*x + 1", {"x": 3.0}, engine=ref) == 7.0
    v = evaluate("x*y", {"x": ref.Var(2.0), "y": ref.Var(4.0)}, engine=ref)
    assert v.value == 8.0
    with pytest.raises(ExpressionError, match="attribute"):
        parse("x.real", ["x"])


# --- what is refused ------------------------------------------------------------

HOSTILE = [
    ("__import__('os').system('touch X')", "attribute access"),
    ("__import__('os')", "dunder name '__import__'"),
    ("x1.__class__", "attribute access"),
    ("x1.real", "attribute access"),
    ("[x for x in ()]", "comprehensions"),
    ("(x for x in ())", "comprehensions"),
    ("{x: 1 for x in ()}", "comprehensions"),
    ("lambda: 1", "lambdas"),
    ("x1[0]", "subscripts"),
    ("open('X', 'w')", "unknown function 'open'"),
    ("eval('1')", "unknown function 'eval'"),
    ("exec('touch X')", "unknown function 'exec'"),
    ("sin(x=x1)", "keyword argument"),
    ("sin(*[x1])", "starred"),
    ("sin(x1)(2)", "calling the result"),
    ("y + 1", "unknown name 'y'"),
    ("__builtins__", "dunder name"),
    ("x1 // 2", "'//'"),
    ("x1 % 2", "'%'"),
    ("~x1", "'~'"),
    ("not x1", "'not'"),
    ("x1 and x1", "and/or"),
    ("x1 if x1 else 2", "conditional"),
    ("(x := 1)", "assignment"),
    ("'a' * 3", "constant 'a'"),
    ("True + x1", "constant True"),
    ("1j * x1", "constant 1j"),
    ("f'{x1}'", "f-strings"),
    ("[x1]", "lists"),
    ("x1, x1", "tuples"),
    ("sin", "as a value"),
    ("x1 in x1", "'in'"),
    ("x1 = 2", "syntax error"),
    ("import os", "syntax error"),
    ("x1 +", "syntax error"),
]


@pytest.mark.parametrize("expr,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_expressions_are_refused(expr, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "explain", expr, "x1=2", "--engine", "reference")
    assert rc == 2
    assert out == ""
    assert err.startswith("fastad explain: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing ran: no file X


def test_refusal_happens_before_anything_is_computed(capsys, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(sin=lambda x: calls.append(x) or x)
    with pytest.raises(ExpressionError):
        evaluate("sin(x) + x.__class__", {"x": 1.0}, engine=fake)
    assert calls == []


def test_huge_and_deep_expressions(capsys):
    rc, _, err = run(capsys, "explain", "x+" * 6000 + "x", "x=1", "--engine", "reference")
    assert rc == 2 and "longer than" in err
    rc, _, err = run(capsys, "explain", "(" * 300 + "x" + ")" * 300 + "*2", "x=1",
                     "--engine", "reference")
    assert rc in (0, 2)  # fine, or refused as too deep; never a traceback
    rc, _, err = run(capsys, "explain", "sin(" * 1500 + "x" + ")" * 1500, "x=1",
                     "--engine", "reference")
    assert rc == 2 and "nested" in err
    rc, _, err = run(capsys, "explain", "-" * 3000 + "x", "x=1", "--engine", "reference")
    assert rc == 2 and "deeply nested" in err


@pytest.mark.parametrize("bindings,message", [
    (["x1=abc"], "not a number"),
    (["x1"], "NAME=VALUE"),
    (["1x=2"], "not a valid variable name"),
    (["__class__=2"], "dunder"),
    (["sin=2"], "function name"),
    (["x1=2", "x1=3"], "bound twice"),
])
def test_bad_bindings(bindings, message, capsys):
    rc, out, err = run(capsys, "explain", "x1", *bindings, "--engine", "reference")
    assert rc == 2
    assert message in err


def test_nothing_to_differentiate(capsys):
    for expr, why in [("2**3", "does not depend"), ("x1", "single variable"),
                      ("x1 > 1", "comparison")]:
        rc, out, err = run(capsys, "explain", expr, "x1=2", "--engine", "reference")
        assert rc == 1 and why in err, err


def test_usage_errors(capsys):
    rc, _, err = run(capsys)
    assert rc == 2 and "usage" in err
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "explain" in out
    rc, _, err = run(capsys, "frobnicate")
    assert rc == 2 and "unknown command" in err
    rc, _, err = run(capsys, "explain", "--format", "json")
    assert rc == 2 and "EXPR" in err
    rc, _, err = run(capsys, "explain", "x", "x=1", "--format", "html")
    assert rc == 2 and "invalid choice" in err
    rc, out, _ = run(capsys, "explain", "--help")
    assert rc == 0 and "NAME=VALUE" in out


def test_bench_is_delegated(monkeypatch):
    import fastad

    seen = []
    fake = types.ModuleType("fastad.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastad.bench", fake)
    monkeypatch.setattr(fastad, "bench", fake, raising=False)
    assert main(["bench", "--quick"]) == 0
    fake.main = lambda argv: seen.append(argv)  # None counts as success
    assert main(["bench", "--full"]) == 0
    assert seen == [["--quick"], ["--full"]]
    fake.main = lambda argv: 3
    assert main(["bench"]) == 3


def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYTHONIOENCODING="utf-8",
               PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                        os.environ.get("PYTHONPATH")])))
    engine = []  # the default engine: the compiled core
    proc = subprocess.run(
        [sys.executable, "-m", "fastad", "explain", "x1*x2 + sin(x1)", "x1=2", "x2=3", *engine],
        cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "∂w5/∂x1 = 2.5838531634528574" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "fastad", "explain", "__import__('os').system('touch X')",
         "x1=2", *engine],
        cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 2
    assert "not allowed" in proc.stderr
    assert not (tmp_path / "X").exists()


def test_functions_list_matches_the_op_table():
    from fastad import ops

    assert set(cli.FUNCTIONS) == set(ops.UNARY) | set(ops.BINARY_FUNCTIONS) | {"where", "clip"}


@pytest.mark.parametrize("args,message", [
    (["--only", ""], "at least one"), (["--only", " , "], "at least one"),
    (["--only", "nosuch"], "unknown workload"), (["--blas-threads", "-1"], "0 or more"),
])
def test_bench_refuses_what_it_cannot_run(capsys, args, message):
    # an empty --only ran the whole bench; a negative thread count was pinned
    from fastad import bench
    with pytest.raises(SystemExit) as info:
        bench.main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_tape_bytes_are_judged_on_a_big_tape_only():
    from fastad import _workloads as W
    small = W.check_targets({}, {"seed": {"rows": 5, "bytes_per_row_swept": 1708.8}})
    assert any(line.startswith("not judged") for line in small) and not any("MISS" in line for line in small)
    big = W.check_targets({}, {"chain": {"rows": 100_010, "bytes_per_row_swept": 33.2}})
    assert any(line.startswith("met") and "chain" in line for line in big)


def test_a_short_format_option_with_its_value_before_the_expression(capsys):
    # -fjson was taken for the expression ("expected NAME=VALUE, got 'x*x'")
    rc, out, _ = run(capsys, "explain", "-fjson", "x*x", "x=3")
    assert rc == 0 and json.loads(out)["gradient"] == {"x": 6.0}
    rc, out, _ = run(capsys, "explain", "-x*x", "x=3")  # an expression that starts with "-" still is one
    assert rc == 0 and "∂w3/∂x = -6" in out
