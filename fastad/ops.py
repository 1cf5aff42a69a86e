"""The op table: every primitive the tape can hold, in code order.

This file is the single source of names, arities and print formats. The
compiled core declares the same codes in ``_core.pxd`` (``tests/test_ops.py``
checks they agree); the reference engine, the printers, the command-line
parser and the tests read names and arity from here. Formulas are *not*
shared: the core (``_rules.pxd``) and the reference
(``reference/scalar_math.py``) each write their own derivatives, so a
mistake in one cannot hide in the other.

Op codes are a file format (compiled tapes pickle them): append new ops at
the end, never renumber.

Row conventions (the tape is a struct of arrays ``op, a, b, c, val``):

* ``a`` and ``b`` are argument row indices, -1 for "none".
* A binary op with one constant argument stores the constant in ``c`` and
  -1 in that argument's slot: ``x + 2`` is ``add(a=x, b=-1, c=2)`` and
  ``2 - x`` is ``sub(a=-1, b=x, c=2)``. So one code serves ``x+y``, ``x+2``
  and ``2+x``, and ``c`` is the only place a constant lives.
* A guard records the outcome of a comparison (1.0 or 0.0) as its value, so
  a replay with new inputs can tell when they would take another branch.
"""
from dataclasses import dataclass
import hashlib


@dataclass(frozen=True)
class OpSpec:
    code: int
    name: str  # public name: fad.<name> and the name printed in traces
    arity: int  # 0 input, 1 unary, 2 binary
    fmt: str  # how a trace prints it; {0}, {1} are the argument names
    kind: str = "smooth"  # "input", "smooth", "kink" (derivative jumps), "guard"
    domain: tuple = (-3.0, 3.0)  # where tests draw inputs (both arguments)
    doc: str = ""  # the derivative and the convention at kinks


OPS = (
    OpSpec(0, "input", 0, "input", "input", doc="a leaf: its adjoint is the gradient"),
    OpSpec(1, "add", 2, "{0} + {1}", doc="d/dx = 1, d/dy = 1"),
    OpSpec(2, "sub", 2, "{0} - {1}", doc="d/dx = 1, d/dy = -1"),
    OpSpec(3, "mul", 2, "{0} * {1}", doc="d/dx = y, d/dy = x"),
    OpSpec(4, "div", 2, "{0} / {1}", domain=(0.5, 3.0), doc="d/dx = 1/y, d/dy = -f/y"),
    OpSpec(5, "power", 2, "{0} ** {1}", domain=(0.5, 2.5),
           doc="d/dx = y x^(y-1) (0 when y = 0), d/dy = f log x (0 when x = 0)"),
    OpSpec(6, "neg", 1, "-{0}", doc="d/dx = -1"),
    OpSpec(7, "square", 1, "{0}**2", doc="d/dx = 2x"),
    OpSpec(8, "sqrt", 1, "sqrt({0})", domain=(0.1, 4.0), doc="d/dx = 1/(2f); inf at 0"),
    OpSpec(9, "cbrt", 1, "cbrt({0})", domain=(0.1, 4.0), doc="d/dx = 1/(3f^2); inf at 0"),
    OpSpec(10, "exp", 1, "exp({0})", doc="d/dx = f"),
    OpSpec(11, "expm1", 1, "expm1({0})", doc="d/dx = f + 1"),
    OpSpec(12, "log", 1, "log({0})", domain=(0.1, 4.0), doc="d/dx = 1/x"),
    OpSpec(13, "log1p", 1, "log1p({0})", domain=(-0.9, 3.0), doc="d/dx = 1/(1+x)"),
    OpSpec(14, "log2", 1, "log2({0})", domain=(0.1, 4.0), doc="d/dx = 1/(x ln 2)"),
    OpSpec(15, "log10", 1, "log10({0})", domain=(0.1, 4.0), doc="d/dx = 1/(x ln 10)"),
    OpSpec(16, "sin", 1, "sin({0})", doc="d/dx = cos x"),
    OpSpec(17, "cos", 1, "cos({0})", doc="d/dx = -sin x"),
    OpSpec(18, "tan", 1, "tan({0})", domain=(-1.2, 1.2), doc="d/dx = 1 + f^2"),
    OpSpec(19, "arcsin", 1, "arcsin({0})", domain=(-0.9, 0.9), doc="d/dx = 1/sqrt(1-x^2)"),
    OpSpec(20, "arccos", 1, "arccos({0})", domain=(-0.9, 0.9), doc="d/dx = -1/sqrt(1-x^2)"),
    OpSpec(21, "arctan", 1, "arctan({0})", doc="d/dx = 1/(1+x^2)"),
    OpSpec(22, "sinh", 1, "sinh({0})", doc="d/dx = cosh x"),
    OpSpec(23, "cosh", 1, "cosh({0})", doc="d/dx = sinh x"),
    OpSpec(24, "tanh", 1, "tanh({0})", doc="d/dx = 1 - f^2"),
    OpSpec(25, "erf", 1, "erf({0})", doc="d/dx = 2/sqrt(pi) exp(-x^2)"),
    OpSpec(26, "sigmoid", 1, "sigmoid({0})", doc="d/dx = f (1 - f)"),
    OpSpec(27, "relu", 1, "relu({0})", "kink", doc="d/dx = 1 if x > 0 else 0 (relu'(0) = 0)"),
    OpSpec(28, "abs", 1, "abs({0})", "kink", doc="d/dx = sign x (abs'(0) = 0)"),
    OpSpec(29, "sign", 1, "sign({0})", "kink", doc="d/dx = 0"),
    OpSpec(30, "maximum", 2, "maximum({0}, {1})", "kink",
           doc="the adjoint goes to the larger argument; a tie splits it 0.5 / 0.5"),
    OpSpec(31, "minimum", 2, "minimum({0}, {1})", "kink",
           doc="the adjoint goes to the smaller argument; a tie splits it 0.5 / 0.5"),
    OpSpec(32, "arctan2", 2, "arctan2({0}, {1})", domain=(0.5, 3.0),
           doc="d/dy = x/(x^2+y^2), d/dx = -y/(x^2+y^2) for arctan2(y, x)"),
    OpSpec(33, "hypot", 2, "hypot({0}, {1})", domain=(0.5, 3.0),
           doc="d/dx = x/f, d/dy = y/f; 0 at the origin, as abs'(0) = 0"),
    OpSpec(34, "lt", 2, "{0} < {1}", "guard", doc="a guard: no derivative"),
    OpSpec(35, "le", 2, "{0} <= {1}", "guard", doc="a guard: no derivative"),
    OpSpec(36, "gt", 2, "{0} > {1}", "guard", doc="a guard: no derivative"),
    OpSpec(37, "ge", 2, "{0} >= {1}", "guard", doc="a guard: no derivative"),
    OpSpec(38, "eq", 2, "{0} == {1}", "guard", doc="a guard: no derivative"),
    OpSpec(39, "ne", 2, "{0} != {1}", "guard", doc="a guard: no derivative"),
    # Array rows (kind "array"): their values are ndarrays kept in the tape's
    # object table, their parameters (axis, shape, index...) in its aux table,
    # and their vector-Jacobian products in fastad/array_rules.py. The
    # compiled sweep handles `elem` itself (element loops run at scalar
    # speed) and hands every other array row to those rules.
    OpSpec(40, "array_input", 0, "input", "array", doc="an Array leaf"),
    OpSpec(41, "elem", 1, "{0}[k]", "array", doc="one element of an array (flat index in c): a scalar"),
    OpSpec(42, "map", 2, "map({0}, {1})", "array",
           doc="a scalar op (code in c) applied elementwise with broadcasting"),
    OpSpec(43, "matmul", 2, "{0} @ {1}", "array", doc="dX = G @ Y^T, dY = X^T @ G"),
    OpSpec(44, "sum", 1, "sum({0})", "array", doc="the adjoint broadcast back over the summed axes"),
    OpSpec(45, "amax", 1, "max({0})", "array", doc="the adjoint to the maxima; ties split it evenly"),
    OpSpec(46, "amin", 1, "min({0})", "array", doc="the adjoint to the minima; ties split it evenly"),
    OpSpec(47, "prod", 1, "prod({0})", "array", doc="d/dx_i = prod of the others"),
    OpSpec(48, "reshape", 1, "reshape({0})", "array", doc="the adjoint reshaped back"),
    OpSpec(49, "transpose", 1, "transpose({0})", "array", doc="the adjoint transposed back"),
    OpSpec(50, "getitem", 1, "{0}[...]", "array", doc="the adjoint scattered back (np.add.at)"),
    OpSpec(51, "concatenate", -1, "concatenate(...)", "array", doc="the adjoint split back"),
    OpSpec(52, "stack", -1, "stack(...)", "array", doc="the adjoint unstacked"),
    OpSpec(53, "where", 2, "where(cond, {0}, {1})", "array", doc="the adjoint routed by the condition"),
    OpSpec(54, "einsum", 2, "einsum({0}, {1})", "array", doc="each operand's adjoint is an einsum too"),
    OpSpec(55, "logsumexp", 1, "logsumexp({0})", "array", doc="d/dx = softmax(x)"),
    OpSpec(56, "compare", 2, "compare({0}, {1})", "array",
           doc="an array comparison (the scalar guard's code in c): a guard, no derivative"),
    OpSpec(57, "log_softmax", 1, "log_softmax({0})", "array", doc="d/dx = g - softmax(x) * sum(g)"),
)

BY_NAME = {spec.name: spec for spec in OPS}
SCALAR_OPS = tuple(s for s in OPS if s.kind != "array")  # rows of scalar values, swept in C
ARRAY_OPS = tuple(s for s in OPS if s.kind == "array")

# The scalar math functions of the public API (fad.sin, ...), by op name.
UNARY = tuple(s.name for s in SCALAR_OPS if s.arity == 1 and s.name != "neg")
BINARY_FUNCTIONS = ("maximum", "minimum", "arctan2", "hypot", "power")
GUARDS = tuple(s.name for s in OPS if s.kind == "guard")
FIRST_ARRAY_OP = BY_NAME["array_input"].code  # every code from here on is an array row


def fingerprint():
    """A short hash of the table (codes, names, arities): stored in every
    pickled tape so a tape made with another table is refused on load."""
    text = ";".join(f"{s.code}:{s.name}:{s.arity}" for s in OPS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
