"""The evaluation trace of a tape, as reverse-mode textbooks print it.

One row per tape row, in the order recorded: its name ``w1, w2, ...``
(``w{row+1}``), the user's label for input rows (``x1, x2, ...``), its
definition in terms of earlier rows (from ``ops.OPS[op].fmt``), its value,
its adjoint from the last reverse sweep, and the local partial derivatives
that the sweep multiplied into each argument's adjoint. Then the gradient:
the adjoints of the input rows.

The printer reads only the op table and ``Tape.rows()``, ``Tape.shapes()``
and ``Tape.inputs()``, which both engines have, so it serves the compiled
core and the reference alike. The local partials are computed with the
reference engine's per-op rules (``fastad.reference.DERIVATIVES``) from the
row's recorded values: no third copy of the derivative formulas. Because
the adjoints come from the engine that swept the tape, a core adjoint that
disagrees with the printed partials times the readers' adjoints points at
a bug in one of the two rule sets.
"""
import json
import math

from . import ops

__all__ = ["explain", "explain_tape"]

FORMATS = ("text", "markdown", "json")
_INPUTS = (ops.BY_NAME["input"].code, ops.BY_NAME["array_input"].code)


# --------------------------------------------------------------------------
# number formatting
# --------------------------------------------------------------------------

def _num(v, digits=10):
    """A short, readable number: ``2``, ``0.5``, ``0.9092974268``.

    Integral values print without a fraction; others with ``digits``
    significant digits, or the shortest round-trip repr if ``digits`` is None.
    An array row's value is the text ``array(2, 3)``: it goes through as is.
    """
    if isinstance(v, str):
        return v
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v) if digits is None else f"{v:.{digits}g}"


def _json_num(v):
    """JSON has no nan/inf: they become the strings "nan", "inf", "-inf"."""
    if v is None or isinstance(v, str):
        return v
    v = float(v)
    return v if math.isfinite(v) else _num(v)


# --------------------------------------------------------------------------
# local partials, from the reference engine's rules
# --------------------------------------------------------------------------

def local_partials(name, x, y, f):
    """The partials of op ``name`` at arguments ``x`` (, ``y``) with output ``f``.

    Returns a tuple with one float per argument (``(d,)`` for a unary op,
    ``(dx, dy)`` for a binary one), or None for inputs, guards and ops
    without a rule. The rules are ``fastad.reference.DERIVATIVES``.

    >>> local_partials("mul", 2.0, 3.0, 6.0)
    (3.0, 2.0)
    >>> local_partials("sin", 0.0, None, 0.0)
    (1.0,)
    >>> local_partials("lt", 1.0, 2.0, 1.0) is None
    True
    """
    from .reference import DERIVATIVES  # pure Python; never imports the core

    rule = DERIVATIVES.get(name)
    spec = ops.BY_NAME.get(name)
    if rule is None or spec is None or spec.kind == "guard":
        return None
    if spec.arity == 1:
        return (float(rule(x, None, f)),)
    dx, dy = rule(x, y, f)
    return (float(dx), float(dy))


# --------------------------------------------------------------------------
# the trace as data
# --------------------------------------------------------------------------

def _spec(code):
    code = int(code)
    return ops.OPS[code] if 0 <= code < len(ops.OPS) else None


def _row_name(i):
    return f"w{i + 1}"


def _const(c, infix):
    text = _num(c, None)
    return f"({text})" if infix and text.startswith("-") else text


def _given_labels(labels):
    """``(label, leaf)`` pairs from a dict label -> leaf, or a list of leaves."""
    if labels is None:
        return {}
    if hasattr(labels, "items"):
        return {str(label): leaf for label, leaf in labels.items()}
    return {f"x{k + 1}": leaf for k, leaf in enumerate(labels)}


def _leaf_labels(tape, labels):
    """row -> label for every INPUT row: the given labels matched by leaf
    identity, the rest ``x1, x2, ...`` by input order (skipping taken names)."""
    given = {id(leaf): label for label, leaf in _given_labels(labels).items()}
    taken = set(given.values())
    out, k = {}, 0
    for row, leaf in tape.inputs():
        label = given.get(id(leaf))
        if label is None:
            k += 1
            while f"x{k}" in taken:
                k += 1
            label = f"x{k}"
            taken.add(label)
        out[int(row)] = label
    return out


def _output_row(tape_rows, output):
    """The row the gradient is of: ``output`` (a Var or a row index), or by
    default the last row that is not a guard."""
    if output is not None:
        index = getattr(output, "index", output)
        return None if index is None else int(index)
    for i in range(len(tape_rows["op"]) - 1, -1, -1):
        spec = _spec(tape_rows["op"][i])
        if spec is None or spec.kind != "guard":
            return i
    return None


def trace(tape, labels=None, output=None):
    """The evaluation trace of ``tape`` as plain data.

    Returns a dict: ``rows`` (one dict per tape row: ``name``, ``row``,
    ``op``, ``label``, ``args``, ``definition``, ``value``, ``adjoint``,
    ``partials``), ``output`` (the name of the row the gradient is of) and
    ``gradient`` (input label -> adjoint of its INPUT row, or None if the
    tape was never swept). ``labels`` maps label -> leaf Var (or is a list
    of leaf Vars, labelled x1, x2, ...); other inputs are labelled
    ``x1, x2, ...`` in row order.

    >>> import fastad.reference as ref
    >>> x = ref.Var(3.0)
    >>> with ref.Tape():  # a fresh tape of its own
    ...     y = x * x
    >>> y.backward(retain_graph=True)
    >>> t = trace(y.tape)
    >>> [r["definition"] for r in t["rows"]], t["gradient"]
    (['x1', 'w1 * w1'], {'x1': 6.0})
    """
    r = tape.rows()
    n = len(r["op"])
    adj = r["adj"]
    # an array row's value and adjoint are arrays (nan in the float columns):
    # shown by their shape, and its partials are not numbers to print
    shape = tape.shapes()
    array = [None if s is None else "array" + str(tuple(s)) for s in shape]
    names = _leaf_labels(tape, labels)
    rows = []
    for i in range(n):
        code, a, b, c = int(r["op"][i]), int(r["a"][i]), int(r["b"][i]), float(r["c"][i])
        f = float(r["val"][i]) if array[i] is None else array[i]
        spec = _spec(code)
        name = _row_name(i)
        if spec is None:
            opname, arity, fmt = f"op{code}", 2 if b >= 0 else 1, None
        else:
            opname, arity, fmt = spec.name, spec.arity, spec.fmt
        label = names.get(i) if code in _INPUTS else None

        args, arg_rows, arg_vals = [], [], []
        for slot in (a, b)[:arity]:
            if slot >= 0:
                args.append(_row_name(slot))
                arg_rows.append(slot)
                arg_vals.append(float(r["val"][slot]))
            else:
                args.append(c)
                arg_rows.append(None)
                arg_vals.append(c)

        inner = _spec(int(c)) if opname in ("map", "compare") and c == int(c) else None
        if code in _INPUTS:
            definition = label
        elif inner is not None and inner.arity in (1, 2):
            # An elementwise array row: its scalar op (code in c) on its
            # arguments, a constant operand (kept in aux) shown as "const".
            definition = inner.fmt.format(*[_row_name(s) if s >= 0 else "const"
                                            for s in (a, b)[:inner.arity]])
        else:
            infix = fmt is not None and fmt.startswith("{")
            shown = [a_ if isinstance(a_, str) else _const(a_, infix) for a_ in args]
            if fmt is None:
                definition = f"{opname}({', '.join(shown)})"
            else:
                definition = fmt.format(*shown)

        partials = local = None
        if spec is not None and spec.kind != "input" and array[i] is None and not any(
                s is not None and array[s] is not None for s in arg_rows):
            x = arg_vals[0] if arg_vals else None
            y = arg_vals[1] if len(arg_vals) > 1 else None
            local = local_partials(opname, x, y, f)
            if local is not None:
                partials = {}
                for slot, d in zip(arg_rows, local):
                    if slot is None:  # a constant: no adjoint to feed
                        continue
                    key = _row_name(slot)
                    partials[key] = partials.get(key, 0.0) + d  # x*x: both slots add
        rows.append({
            "name": name,
            "row": i,
            "op": opname,
            "label": label,
            "args": args,
            "definition": definition,
            "value": f,
            "adjoint": None if adj is None else float(adj[i]) if array[i] is None else array[i],
            "partials": partials,
            "_local": local,  # per argument slot, for dot's edges; not printed
        })

    out_row = _output_row(r, output)
    gradient = None
    if adj is not None:
        # the caller's labels in the caller's order (x1, x2, ... by argument
        # position for explain), then any other inputs in row order
        order = {label: k for k, label in enumerate(_given_labels(labels))}
        rows_in_order = sorted(names, key=lambda row: (order.get(names[row], len(order)), row))
        gradient = {names[row]: float(adj[row]) if array[row] is None else array[row]
                    for row in rows_in_order}
    return {
        "rows": rows,
        "output": None if out_row is None else _row_name(out_row),
        "gradient": gradient,
    }


# --------------------------------------------------------------------------
# printers
# --------------------------------------------------------------------------

_HEADER = ("name", "label", "definition", "value", "adjoint", "local partials")


def _cells(row):
    partials = ""
    if row["partials"]:
        partials = ", ".join(
            f"∂{row['name']}/∂{arg} = {_num(d)}" for arg, d in row["partials"].items())
    return (
        row["name"],
        row["label"] or "",
        "input" if row["op"] in ("input", "array_input") else row["definition"],
        _num(row["value"]),
        "" if row["adjoint"] is None else _num(row["adjoint"]),
        partials,
    )


def _gradient_items(tr):
    out = tr["output"] or "y"
    return [f"∂{out}/∂{label} = {_num(g, None)}" for label, g in tr["gradient"].items()]


def _text(tr):
    table = [_HEADER] + [_cells(row) for row in tr["rows"]]
    widths = [max(len(cells[k]) for cells in table) for k in range(len(_HEADER))]
    numeric = (False, False, False, True, True, False)

    def line(cells):
        parts = [cell.rjust(w) if num else cell.ljust(w)
                 for cell, w, num in zip(cells, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [line(_HEADER), "  ".join("-" * w for w in widths)]
    lines += [line(cells) for cells in table[1:]]
    lines.append("")
    if tr["gradient"] is None:
        lines.append("gradient: not computed (call backward() first)")
    else:
        lines.append(f"gradient of {tr['output']}:" if tr["output"] else "gradient:")
        lines += ["  " + item for item in _gradient_items(tr)]
    return "\n".join(lines) + "\n"


def _markdown(tr):
    def line(cells):
        return "|" + "".join(f" {c.replace('|', chr(92) + '|')} |" if c else " |"
                             for c in cells)

    lines = [line(_HEADER), "|" + "---|" * len(_HEADER)]
    lines += [line(_cells(row)) for row in tr["rows"]]
    lines.append("")
    if tr["gradient"] is None:
        lines.append("**gradient**: not computed (call backward() first)")
    else:
        lines.append("**gradient**: " + ", ".join(_gradient_items(tr)))
    return "\n".join(lines) + "\n"


def _json(tr):
    rows = []
    for row in tr["rows"]:
        row = {k: v for k, v in row.items() if not k.startswith("_")}
        row["args"] = [a if isinstance(a, str) else _json_num(a) for a in row["args"]]
        row["value"] = _json_num(row["value"])
        row["adjoint"] = _json_num(row["adjoint"])
        if row["partials"] is not None:
            row["partials"] = {k: _json_num(v) for k, v in row["partials"].items()}
        rows.append(row)
    gradient = tr["gradient"]
    if gradient is not None:
        gradient = {k: _json_num(v) for k, v in gradient.items()}
    def dumps(obj):
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)

    # one row per line: readable as text, and still plain JSON
    return ('{"rows": [\n' + ",\n".join("  " + dumps(row) for row in rows) + "\n ],\n"
            f' "output": {dumps(tr["output"])},\n'
            f' "gradient": {dumps(gradient)}}}\n')


_PRINTERS = {"text": _text, "markdown": _markdown, "json": _json}


def explain_tape(tape, fmt="text", labels=None, output=None):
    """The evaluation trace of ``tape`` as a string.

    One row per tape row in recording order: name (``w1``, ``w2``, ... by
    row), the input's label (``x1``, ``x2``, ... in input order, or the
    names in ``labels``, a dict label -> leaf Var), its definition in
    earlier rows, value, adjoint (blank before any ``backward()``) and the
    local partials fed into each argument's adjoint; then the gradient
    (the adjoints of the inputs) of ``output`` (a Var or row; default the
    last row). ``fmt`` is ``"text"`` (an aligned table), ``"markdown"``
    or ``"json"`` (``{"rows": [...], "output": ..., "gradient": {...}}``;
    nan and inf as the strings ``"nan"``, ``"inf"``, ``"-inf"``).

    >>> import fastad.reference as ref
    >>> x1, x2 = ref.Var(2.0), ref.Var(3.0)
    >>> with ref.Tape():  # a fresh tape of its own
    ...     z = x1 * x2
    >>> z.backward(retain_graph=True)
    >>> print(explain_tape(z.tape), end="")
    name  label  definition  value  adjoint  local partials
    ----  -----  ----------  -----  -------  ------------------------
    w1    x1     input           2        3
    w2    x2     input           3        2
    w3           w1 * w2         6        1  ∂w3/∂w1 = 3, ∂w3/∂w2 = 2
    <BLANKLINE>
    gradient of w3:
      ∂w3/∂x1 = 3
      ∂w3/∂x2 = 2
    """
    if fmt not in _PRINTERS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return _PRINTERS[fmt](trace(tape, labels=labels, output=output))


def _default_engine():
    import fastad  # lazily: the compiled core may not be built yet

    return fastad


def explain(f, *args, fmt="text", engine=None):
    """Run ``f`` on fresh leaf Vars made from ``args``, sweep, and explain.

    The arguments (floats) become leaves labelled ``x1, x2, ...`` by
    position; ``f``'s output is swept with ``backward()`` and its tape
    printed by ``explain_tape``. ``engine`` is the module that supplies
    ``Var`` and ``Tape``: ``fastad`` (the compiled core, the default) or
    ``fastad.reference``.

    >>> import fastad.reference as ref
    >>> text = explain(lambda x1, x2: x1 * x2 + ref.sin(x1), 2.0, 3.0,
    ...                engine=ref)
    >>> print(text.splitlines()[-2])
      ∂w5/∂x1 = 2.5838531634528574
    """
    if engine is None:
        engine = _default_engine()
    if fmt not in _PRINTERS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}; got {fmt!r}")
    leaves = []
    for k, a in enumerate(args):
        if isinstance(a, bool) or not isinstance(a, (int, float)) and not (
                hasattr(a, "__float__") and getattr(a, "ndim", 0) == 0):
            raise TypeError(f"explain: argument {k + 1} must be a float, "
                            f"got {type(a).__name__}")
        leaves.append(engine.Var(float(a)))
    with engine.Tape() as t:
        t.watch(*leaves)  # inputs first: x1..xn are w1..wn, as in textbook tables
        out = f(*leaves)
    if isinstance(out, (list, tuple, dict)) or getattr(out, "size", 1) != 1:
        raise ValueError(f"explain: f must return one number, got {type(out).__name__}; "
                         "explain one output at a time")
    tape = getattr(out, "tape", None)
    if tape is None:
        raise ValueError("explain: f's output does not depend on any operation on "
                         "its inputs (a constant or an input itself); nothing to explain")
    if tape is not t:  # f joined its arguments to a value recorded before the call: that tape
        raise ValueError("explain: f combines its arguments with a value recorded outside it "
                         "(a Var computed before the call), so its rows are on that value's "
                         "tape; pass the value in as an argument, or use its .value")
    # Leaves from outside f (closed over): inputs of the tape, labelled c1, c2 ...;
    # their .grad stays as the caller left it, as under fad.grad.
    ours = {id(leaf) for leaf in leaves}
    outside = [leaf for _, leaf in t.inputs() if id(leaf) not in ours]
    kept = [leaf.grad for leaf in outside]
    out.backward(retain_graph=True)
    for leaf, grad in zip(outside, kept):
        leaf.grad = grad
    labels = {f"x{k + 1}": leaf for k, leaf in enumerate(leaves)}
    labels.update({f"c{k + 1}": leaf for k, leaf in enumerate(outside)})
    return explain_tape(tape, fmt=fmt, labels=labels, output=out)
