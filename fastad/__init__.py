"""fastad: reverse-mode automatic differentiation with a compiled tape.

>>> import fastad as fad
>>> fad.grad(lambda x, y: x * y + fad.sin(x), argnums=(0, 1))(2.0, 3.0)
(2.5838531634528574, 2.0)
"""
from fastad._core import (
    FastADError, NanError, Tape, Var, no_grad, debug_nans,
    sin, cos, tan, arcsin, arccos, arctan, sinh, cosh, tanh, exp, expm1, log, log1p,
    log2, log10, sqrt, cbrt, square, abs, sign, sigmoid, relu, erf,
    maximum, minimum, power, arctan2, hypot, where, clip,
)
from fastad._core import Array
from fastad.array import stack, concatenate, logsumexp, softmax, log_softmax
from fastad._replay import BranchChanged
from fastad.functional import grad, value_and_grad, jacobian, hessian, hvp, jvp, vjp
from fastad.compiled import compile
from fastad.check import check_grad
from fastad.dot import to_dot, render
from fastad.explain import explain
from fastad import reference  # the pure-Python engine, as fad.reference (it never imports _core)

__version__ = "0.1.0"

__all__ = [
    "FastADError", "BranchChanged", "NanError", "Tape", "Var", "Array", "stack", "concatenate",
    "logsumexp", "softmax", "log_softmax", "no_grad", "debug_nans",
    "grad", "value_and_grad", "jacobian", "hessian", "hvp", "jvp", "vjp", "compile",
    "explain", "to_dot", "render", "check_grad",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "exp",
    "expm1", "log", "log1p", "log2", "log10", "sqrt", "cbrt", "square", "abs", "sign",
    "sigmoid", "relu", "erf", "maximum", "minimum", "power", "arctan2", "hypot", "where",
    "clip",
]
