"""The computation graph of an output as Graphviz DOT, and its rendering.

``to_dot(output)`` draws the rows the output reaches: one node per row with
its name, definition, op, value and adjoint, and one edge per argument,
from the argument to the row that reads it, labelled with the local partial
derivative the reverse sweep multiplies along it. ``render(output, path)``
runs Graphviz's ``dot`` program to write an SVG or PNG.
"""
import os
import shutil
import subprocess

import numpy as np

from .explain import _num, trace

__all__ = ["to_dot", "render"]

_INSTALL_HINT = (
    "rendering needs the Graphviz 'dot' program, which was not found on PATH; "
    "install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
    "graphviz; conda: conda install graphviz), or write the DOT text from "
    "fastad.to_dot(output) to a file and render it elsewhere"
)
_FORMATS = {".svg": "svg", ".png": "png"}


def _quote(text):
    """A DOT double-quoted string; ``\\n`` in ``text`` becomes a line break."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _reached(rows, out):
    """Rows the output reaches (its ancestors and itself), in row order."""
    by_name = {row["name"]: row for row in rows}
    seen = {out}
    stack = [out]
    while stack:
        row = by_name[stack.pop()]
        for arg in row["args"]:
            if isinstance(arg, str) and arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return [row for row in rows if row["name"] in seen]


def to_dot(output, labels=None):
    """Graphviz DOT text of the graph behind ``output`` (a ``Var``).

    Every row the output reaches is a node labelled with its name,
    definition, op, value and adjoint (adjoints from the last
    ``backward()``; none shown before one). Every edge runs from an argument
    to the row reading it and is labelled with the local partial derivative
    ``d row / d argument``. Inputs are boxes labelled ``x1, x2, ...`` (or by
    ``labels``, a dict label -> leaf Var); the output has a double border.

    >>> import fastad.reference as ref
    >>> x1, x2 = ref.Var(2.0), ref.Var(3.0)
    >>> with ref.Tape():  # a fresh tape of its own
    ...     z = x1 * x2
    >>> z.backward(retain_graph=True)
    >>> src = to_dot(z)
    >>> src.splitlines()[0]
    'digraph fastad {'
    >>> '"w1" -> "w3" [label="3"];' in src
    True
    """
    lines = [
        "digraph fastad {",
        "  rankdir=LR;",
        '  node [shape=ellipse, fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    tape = getattr(output, "tape", None)
    if tape is None:  # a leaf on no tape: a graph of one node
        value = getattr(output, "value", output)
        grad = getattr(output, "grad", None)
        def shown(v):  # an array leaf: its shape, as array rows print
            return _num(v) if np.ndim(v) == 0 else f"array{np.shape(v)}"
        text = f"leaf\nvalue {shown(value)}"
        if grad is not None:
            text += f"\ngrad {shown(grad)}"
        lines.append(f"  leaf [shape=box, label={_quote(text)}, peripheries=2];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    tr = trace(tape, labels=labels, output=output)
    out_name = tr["output"]
    rows = _reached(tr["rows"], out_name)
    for row in rows:
        if row["op"] in ("input", "array_input"):
            head = f"{row['name']} = {row['label']}\ninput"
            shape = "box"
        else:
            head = f"{row['name']} = {row['definition']}\n{row['op']}"
            shape = "ellipse"
        text = f"{head}\nvalue {_num(row['value'])}"
        if row["adjoint"] is not None:
            text += f"\nadjoint {_num(row['adjoint'])}"
        attrs = [f"shape={shape}", f"label={_quote(text)}"]
        if row["name"] == out_name:
            attrs.append("peripheries=2")
        lines.append(f"  {_quote(row['name'])} [{', '.join(attrs)}];")
    for row in rows:
        partials = _edge_partials(row)
        for arg, d in partials:
            label = "" if d is None else f" [label={_quote(_num(d))}]"
            lines.append(f"  {_quote(arg)} -> {_quote(row['name'])}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_partials(row):
    """(argument name, partial or None) for each argument slot holding a row.

    ``x * x`` reads one row in both slots: two edges, each with its own
    partial (the trace's ``partials`` holds their sum).
    """
    local = row["_local"]
    return [(arg, None if local is None else local[k])
            for k, arg in enumerate(row["args"]) if isinstance(arg, str)]


def render(output, path, labels=None):
    """Render the graph of ``output`` to ``path`` (``.svg`` or ``.png``).

    Runs Graphviz's ``dot`` program (no shell). Raises ``RuntimeError``
    with install instructions if ``dot`` is not on PATH, or with dot's
    message if it fails; ``ValueError`` for another file extension.
    ``labels`` names the inputs as in ``to_dot``. Returns ``path``.

    >>> import shutil, tempfile, os
    >>> import fastad.reference as ref
    >>> with ref.Tape():
    ...     z = ref.Var(2.0) * ref.Var(3.0)
    >>> z.backward(retain_graph=True)
    >>> if shutil.which("dot"):
    ...     with tempfile.TemporaryDirectory() as d:
    ...         _ = render(z, os.path.join(d, "graph.svg"))
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise ValueError(
            f"render: cannot tell the image format from {path!r}; use a path "
            "ending in .svg or .png (or write to_dot(output) to a .dot file)")
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(_INSTALL_HINT)
    source = to_dot(output, labels=labels)
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}", "-o", path], input=source.encode("utf-8"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"render: running Graphviz 'dot' failed: {exc}") from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"render: Graphviz 'dot' failed (exit {proc.returncode}): {msg}")
    return path
