"""fastad.reference: reverse-mode automatic differentiation in plain Python.

This package is the same algorithm as fastad's compiled core, written to be
read. Tests use it as an oracle and benchmarks as their baseline, so it
imports nothing from the compiled core: only the op table (``ops.py``) for
op codes, names and arities. Every value and derivative formula is
written in its modules, independently of the core.

The Wengert list (the "tape")
-----------------------------
Evaluating ``z = x1 * x2 + sin(x1)`` at (2, 3) as a sequence of elementary
operations gives one row per intermediate value::

    row  op     a   b   c    val
    0    input  -1  -1  0    2.0         w0 = x1
    1    input  -1  -1  0    3.0         w1 = x2
    2    mul     0   1  0    6.0         w2 = w0 * w1
    3    sin     0  -1  0    0.909...    w3 = sin(w0)
    4    add     2   3  0    6.909...    w4 = w2 + w3

``a`` and ``b`` are the rows an op reads (-1: none, or "the constant c":
``x + 2`` is ``add(a=x, b=-1, c=2)``). Rows are appended in creation order,
and an op's arguments always exist before it, so that order is already a
topological order of the computation graph.

The reverse sweep
-----------------
``z.backward()`` seeds the adjoint ``adj[z] = dz/dz = 1`` and walks the rows
backwards. For each row ``i`` the output reaches, and each argument ``j`` of
it, the chain rule adds ``adj[i] * d(w_i)/d(w_j)`` into ``adj[j]``; adjoints
add up where a value is used more than once. Because every row is visited
after all the rows that read it, ``adj[i]`` is complete when we reach it,
and one backward loop (no recursion) suffices. Finally the adjoints of the
INPUT rows are the gradient, and are added into the leaves' ``.grad``.

Leaves (``Var(2.0)``) live on no tape. The first op that uses a leaf on a
tape appends an INPUT row for it; a training loop can therefore rebuild a
fresh tape every step from the same leaves without growing memory.

Arrays
------
An ``Array`` is the same idea one level up: a row whose value is a whole
float64 ndarray, and whose adjoint, in the sweep, is an ndarray of the same
shape. ``w = x @ W`` is one ``matmul`` row; ``np.sin(a)`` is one ``map`` row
(the scalar op's code in ``c``: the elementwise op *is* the scalar op, with
its derivative taken from the same table, element by element); ``a.sum()``
is a ``sum`` row whose value is a plain float, and ``a[i]`` an ``elem`` row
(flat index in ``c``), so scalar and array rows mix freely on one tape::

    row  op           a   b   c    val
    0    array_input  -1  -1  0    [1, 2, 3]     w0 = a
    1    input        -1  -1  0    2.0           w1 = x
    2    map           0  -1  16   [sin 1, ...]  w2 = sin(w0)   (16: sin)
    3    sum           2  -1  0    1.891...      w3 = sum(w2)
    4    mul           3   1  0    3.783...      w4 = w3 * w1

The sweep is the same single backward loop: each array row hands its
adjoint to its arguments by its own rule, a *vector*-Jacobian product
(``dX = G @ Y.T`` for a matmul), written out in ``array_rules.py``. Where
NumPy broadcast an argument up to the result's shape, the rule sums the
adjoint back down to the argument's shape (``_unbroadcast``). Parameters
that are not rows (an axis, an index, a constant operand) are kept in
``tape.aux[row]``.

The modules
-----------
In reading order:

``scalar_math``      every op's value (``FORWARD``) and partial derivatives
                     (``DERIVATIVES``), with IEEE results where ``math`` raises
``tape``             the Wengert list (``Tape``), its reverse sweep, the
                     thread's current tape
``var``              ``Var``: recording scalar ops; the math functions
                     (``sin`` ... ``power``, ``where``, ``clip``)
``array``            ``Array``: recording array rows; elementwise ops (``map``)
``array_ops``        matmul, einsum, reductions, softmax, reshape, indexing,
                     concatenate, stack, where
``numpy_protocols``  ``np.sin(a)``, ``np.sum(a)`` ... on Vars and Arrays
``array_rules``      the derivatives of the array ops (``_ARRAY_RULES``)
``functional``       ``grad`` and ``value_and_grad``

``tape``, ``var`` and ``array`` call one another at run time (the tape tells
its two kinds of leaf apart, an op on a Var may give an Array, an Array's
``sum()`` gives a Var). Each module imports at its top what it needs from
the modules before it in this order: ``scalar_math``, ``array_rules``,
``tape``, ``var``, ``array``, ``array_ops``, ``numpy_protocols``,
``functional``. The few names that ``tape``, ``var`` and ``array`` use from
modules after them they import at their end, once their own names exist:
so they stay plain globals on the recording paths (no import inside a
function, no ``module.name`` lookup). The imports below load ``tape``
first, which loads the rest in that order.
"""
from .. import ops
from .scalar_math import DERIVATIVES, FORWARD
from .tape import FastADError, Tape  # first of the three that import one another: see above
from .var import (
    Var, abs, arccos, arcsin, arctan, arctan2, cbrt, clip, cos, cosh, erf, exp, expm1,
    hypot, log, log1p, log2, log10, maximum, minimum, power, relu, sigmoid, sign, sin,
    sinh, sqrt, square, tan, tanh, where,
)
from .array import Array
from .array_ops import concatenate, log_softmax, logsumexp, softmax, stack
from .functional import grad, value_and_grad

__all__ = [
    "FastADError", "Tape", "Var", "Array", "grad", "value_and_grad",
    "DERIVATIVES", "FORWARD",
    "stack", "concatenate", "logsumexp", "softmax", "log_softmax",
] + list(ops.UNARY) + list(ops.BINARY_FUNCTIONS) + ["where", "clip"]
