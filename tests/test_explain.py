"""fastad/explain.py: the evaluation trace, over both engines."""
import json
import math

import numpy as np
import pytest

from fastad import ops
from fastad.explain import explain, explain_tape, local_partials, trace


def _core():
    import fastad
    return fastad


def rows_of(f, *args, engine):
    data = json.loads(explain(f, *args, fmt="json", engine=engine))
    return data["rows"], data["gradient"], data["output"]


# --- the textbook examples ----------------------------------------------------

def test_seed_example_trace(engine):
    rows, gradient, output = rows_of(
        lambda x1, x2: x1 * x2 + engine.sin(x1), 2.0, 3.0, engine=engine)
    assert [r["name"] for r in rows] == ["w1", "w2", "w3", "w4", "w5"]
    assert [r["label"] for r in rows] == ["x1", "x2", None, None, None]
    assert [r["definition"] for r in rows] == ["x1", "x2", "w1 * w2", "sin(w1)", "w3 + w4"]
    values = [r["value"] for r in rows]
    assert values[:3] == [2.0, 3.0, 6.0]
    assert values[3] == pytest.approx(math.sin(2.0), rel=1e-15)
    assert values[4] == pytest.approx(6 + math.sin(2.0), rel=1e-15)
    adjoints = [r["adjoint"] for r in rows]
    assert adjoints[2:] == [1.0, 1.0, 1.0]
    assert adjoints[1] == 2.0
    assert adjoints[0] == pytest.approx(3 + math.cos(2.0), rel=1e-15)
    assert rows[2]["partials"] == {"w1": 3.0, "w2": 2.0}
    assert rows[3]["partials"]["w1"] == pytest.approx(math.cos(2.0), rel=1e-15)
    assert rows[4]["partials"] == {"w3": 1.0, "w4": 1.0}
    assert rows[0]["partials"] is None
    assert output == "w5"
    assert gradient["x1"] == pytest.approx(2.5838531634528574, rel=1e-15)
    assert gradient["x2"] == 2.0


def test_seed_example_text(engine):
    text = explain(lambda x1, x2: x1 * x2 + engine.sin(x1), 2.0, 3.0, engine=engine)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "label", "definition", "value", "adjoint",
                                "local", "partials"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:5] == ["w1", "x1", "input", "2", "2.583853163"]
    assert lines[4].split()[:5] == ["w3", "w1", "*", "w2", "6"]
    assert "∂w3/∂w1 = 3, ∂w3/∂w2 = 2" in lines[4]
    assert "sin(w1)" in lines[5] and "0.9092974268" in lines[5]
    assert "∂w4/∂w1 = -0.4161468365" in lines[5]
    assert "6.909297427" in lines[6]
    assert "gradient of w5:" in lines
    assert "  ∂w5/∂x1 = 2.5838531634528574" in lines
    assert "  ∂w5/∂x2 = 2" in lines
    # aligned: values and adjoints are right-justified under their headers
    for header in ("value", "adjoint"):
        end = lines[0].index(header) + len(header)
        for line in lines[2:7]:
            assert line[end - 1] != " " and line[end:end + 1] in ("", " "), line


def test_log_example(engine):
    rows, gradient, _ = rows_of(
        lambda x1, x2: engine.log(x1) + x1 * x2 - engine.sin(x2), 2.0, 5.0, engine=engine)
    # explain lists the inputs first (w1 = x1, w2 = x2), as textbook tables do
    assert [r["definition"] for r in rows] == [
        "x1", "x2", "log(w1)", "w1 * w2", "w3 + w4", "sin(w2)", "w5 - w6"]
    assert rows[2]["partials"] == {"w1": 0.5}
    assert rows[6]["partials"] == {"w5": 1.0, "w6": -1.0}
    assert gradient == {"x1": pytest.approx(5.5, rel=1e-15),
                        "x2": pytest.approx(1.7163378145367738, rel=1e-15)}


# --- details ------------------------------------------------------------------

def test_inputs_come_first_in_argument_order(engine):
    rows, gradient, _ = rows_of(lambda x1, x2: x2 * x1, 2.0, 3.0, engine=engine)
    assert [r["label"] for r in rows[:2]] == ["x1", "x2"]  # not the order of first use
    assert rows[2]["definition"] == "w2 * w1"
    assert list(gradient.items()) == [("x1", 3.0), ("x2", 2.0)]  # argument order


def test_constants_print_as_numbers(engine):
    rows, _, _ = rows_of(
        lambda x: 0.5 * x + (2 - x) + x * (-2) + x ** 3 + x / 4, 2.0, engine=engine)
    defs = [r["definition"] for r in rows]
    assert "0.5 * w1" in defs or "w1 * 0.5" in defs
    assert "2 - w1" in defs
    assert "w1 * (-2)" in defs or "(-2) * w1" in defs
    assert "w1 ** 3" in defs
    assert "w1 / 4" in defs or "w1 * 0.25" in defs
    sub = next(r for r in rows if r["definition"] == "2 - w1")
    assert sub["args"] == [2.0, "w1"]
    assert sub["partials"] == {"w1": -1.0}  # no entry for the constant


def test_same_row_twice_sums_partials(engine):
    rows, gradient, _ = rows_of(lambda x: x * x, 3.0, engine=engine)
    assert rows[1]["definition"] == "w1 * w1"
    assert rows[1]["partials"] == {"w1": 6.0}
    assert gradient == {"x1": 6.0}


def test_guard_rows_have_no_partials(engine):
    rows, gradient, _ = rows_of(
        lambda x, y: engine.where(x > y, x, y) * 2, 3.0, 1.0, engine=engine)
    guard = next(r for r in rows if r["op"] == "gt")
    assert guard["definition"] == "w1 > w2"
    assert guard["value"] == 1.0
    assert guard["partials"] is None
    assert gradient == {"x1": 2.0, "x2": 0.0}


def test_nan_and_inf_are_strings_in_json(engine):
    rows, gradient, _ = rows_of(lambda x: engine.sqrt(x - 2.0), 2.0, engine=engine)
    assert rows[-1]["partials"] == {"w2": "inf"}
    assert gradient == {"x1": "inf"}
    text = explain(lambda x: engine.log(x - 2.0) * 0.0, 2.0, engine=engine)
    assert "nan" in text and "-inf" in text


def test_adjoints_match_partials(engine):
    """The engine's adjoints equal the printed partials times the readers'
    adjoints: the core's sweep agrees with the reference's rules row by row."""
    def f(x, y):
        return engine.exp(x * y) / (1 + engine.tanh(y)) + engine.hypot(x, y) ** 1.5 - x

    rows, _, _ = rows_of(f, 0.7, -0.4, engine=engine)
    expected = {r["name"]: 0.0 for r in rows}
    expected[rows[-1]["name"]] = 1.0
    for r in reversed(rows):
        for arg, d in (r["partials"] or {}).items():
            expected[arg] += r["adjoint"] * d
    for r in rows:
        assert r["adjoint"] == pytest.approx(expected[r["name"]], rel=1e-12, abs=1e-15)


def test_markdown(engine):
    text = explain(lambda x1, x2: x1 * x2 + engine.sin(x1), 2.0, 3.0,
                   fmt="markdown", engine=engine)
    lines = text.splitlines()
    table = lines[:7]
    assert table[0] == "| name | label | definition | value | adjoint | local partials |"
    assert table[1] == "|---|---|---|---|---|---|"
    for line in table:
        assert line.startswith("|") and line.endswith("|")
        assert line.count("|") == 7
    assert table[4] == "| w3 | | w1 * w2 | 6 | 1 | ∂w3/∂w1 = 3, ∂w3/∂w2 = 2 |"
    assert lines[-1] == "**gradient**: ∂w5/∂x1 = 2.5838531634528574, ∂w5/∂x2 = 2"


def test_explain_tape_before_backward(engine):
    x = engine.Var(2.0)
    with engine.Tape() as tape:
        y = x * 3.0
    del y
    text = explain_tape(tape)
    assert "gradient: not computed" in text
    assert text.splitlines()[3].split() == ["w2", "w1", "*", "3", "6", "∂w2/∂w1", "=", "3"]
    data = json.loads(explain_tape(tape, "json"))
    assert data["gradient"] is None
    assert [r["adjoint"] for r in data["rows"]] == [None, None]


def test_tape_explain_method_and_labels(engine):
    a, b = engine.Var(1.5), engine.Var(-2.0)
    with engine.Tape():  # a fresh tape: the thread's implicit one may hold other rows
        z = a * b + a
    z.backward(retain_graph=True)
    assert z.tape.explain() == explain_tape(z.tape)
    assert z.tape.explain("json") == explain_tape(z.tape, "json")
    named = json.loads(explain_tape(z.tape, "json", labels={"a": a, "b": b}, output=z))
    assert named["gradient"] == {"a": -1.0, "b": 1.5}
    # unnamed inputs take x1, x2, ... skipping names already used
    partly = json.loads(explain_tape(z.tape, "json", labels={"x1": b}))
    assert partly["gradient"] == {"x2": -1.0, "x1": 1.5}


def test_errors(engine):
    with pytest.raises(ValueError, match="fmt"):
        explain(lambda x: x * 2, 1.0, fmt="html", engine=engine)
    with pytest.raises(TypeError, match="argument 1"):
        explain(lambda x: x * 2, "1", engine=engine)
    with pytest.raises(ValueError, match="nothing to explain"):
        explain(lambda x: 3.0, 1.0, engine=engine)
    with pytest.raises(ValueError, match="nothing to explain"):
        explain(lambda x: x, 1.0, engine=engine)
    with pytest.raises(ValueError, match="one number"):  # (it said the output depends on no op)
        explain(lambda x: [x, x * x], 1.0, engine=engine)
    assert "∂w2/∂x1 = 2" in explain(lambda x: x * np.full(1, 2.0), 1.0, engine=engine)  # one element: one number


def test_default_engine_is_the_core():
    fad = _core()
    text = explain(lambda x: fad.exp(x), 0.0)
    assert "exp(w1)" in text and "∂w2/∂x1 = 1" in text


def test_local_partials_cover_the_table():
    for spec in ops.SCALAR_OPS:
        x = 0.7
        y = 1.3 if spec.arity == 2 else None
        got = local_partials(spec.name, x, y, 0.5)
        if spec.kind in ("input", "guard"):
            assert got is None
        else:
            assert isinstance(got, tuple) and len(got) == spec.arity, spec.name


def test_unknown_op_code_prints_generically():
    class FakeTape:
        def rows(self):
            import numpy as np
            return {"op": np.array([0, 200], np.uint8), "a": np.array([-1, 0], np.int32),
                    "b": np.array([-1, -1], np.int32), "c": np.zeros(2),
                    "val": np.array([1.0, 2.0]), "adj": None}

        def shapes(self):
            return [None, None]

        def inputs(self):
            return [(0, object())]

    t = trace(FakeTape())
    assert t["rows"][1]["definition"] == "op200(w1)"
    assert t["rows"][1]["partials"] is None


def test_array_rows_print_their_shape_not_nan(engine):
    """An array row's value and adjoint are arrays: the trace shows their
    shape (the float columns read nan there, which it printed, down to a
    nan gradient), an array input is an input with its label, and no
    partials are printed for array rows. to_dot labels them the same way."""
    import numpy as np
    a, x = engine.Array(np.array([1.0, 2.0])), engine.Var(3.0)
    with engine.Tape() as t:
        s = (a * a).sum() * x
    s.backward(retain_graph=True)
    tr = trace(t)
    assert [r["value"] for r in tr["rows"]] == ["array(2,)", "array(2,)", 5.0, 3.0, 15.0]
    assert [r["adjoint"] for r in tr["rows"]] == ["array(2,)", "array(2,)", 3.0, 5.0, 1.0]
    assert tr["rows"][0]["label"] == "x1" and tr["rows"][0]["definition"] == "x1"
    assert tr["rows"][1]["partials"] is None and tr["rows"][2]["partials"] is None
    assert tr["gradient"] == {"x1": "array(2,)", "x2": 5.0}
    text = t.explain()
    assert "nan" not in text and "∂w5/∂x1 = array(2,)" in text
    import fastad
    assert "nan" not in t.explain(fmt="json") and "nan" not in fastad.to_dot(s)


def test_elementwise_array_rows_print_their_scalar_op():
    """A map or compare row keeps its scalar op's code in c: the trace prints
    that op (x * x, -x, x > const), not the code as a number."""
    import numpy as np
    import fastad as fad
    x = fad.Array(np.array([1.0, 0.2]))
    with fad.Tape() as t:
        y = np.sum(fad.where(x > 0.5, x * x, -x)) + np.sum(np.maximum(0.3, x))
    y.backward(retain_graph=True)
    shown = [r["definition"] for r in trace(t)["rows"]]
    assert shown[1:5] == ["w1 > const", "w1 * w1", "-w1", "where(cond, w3, w4)"]
    assert "maximum(const, w1)" in shown


def test_tape_explain_names_the_row_backward_swept_from(engine):
    """Not the last row: backward() of y1 = x * x on a tape that also holds
    sin(x) printed 'gradient of w3' (the sin) with y1's number 4."""
    with engine.Tape() as t:
        x = engine.Var(2.0)
        y1 = x * x
        engine.sin(x)
    y1.backward(retain_graph=True)
    assert t.explain().splitlines()[-2:] == ["gradient of w2:", "  ∂w2/∂x1 = 4"]
    assert t.explain(output=2).splitlines()[-2] == "gradient of w3:"


def test_explain_keeps_to_fs_own_tape(engine):
    """A leaf f closes over is an input of its own (c1), whose .grad the
    call leaves alone; an intermediate value recorded outside f would put
    f's rows on another tape: refused."""
    w = engine.Var(2.0)
    w.grad = 0.5
    text = explain(lambda x: x * w, 3.0, engine=engine)
    assert text.splitlines()[-3:] == ["gradient of w3:", "  ∂w3/∂x1 = 2", "  ∂w3/∂c1 = 3"]
    assert w.grad == 0.5
    with engine.Tape():
        z0 = w * w
    with pytest.raises(ValueError, match="recorded outside"):
        explain(lambda x: x * z0, 3.0, engine=engine)
