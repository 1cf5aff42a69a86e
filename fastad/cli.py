"""The command line: ``python -m fastad explain ...`` and ``python -m fastad bench``.

The expression given to ``explain`` is parsed with ``ast.parse`` and walked
here node by node against a whitelist; it is never passed to ``eval``,
``exec`` or ``compile``. Anything outside the whitelist (attribute access,
subscripts, lambdas, comprehensions, keyword arguments, calls to anything
but fastad's math functions, unknown or dunder names, ...) is refused with a
message on stderr and exit status 2 before any of it is evaluated.
"""
import argparse
import ast
import sys

import numpy as np

from . import ops

__all__ = ["main", "parse", "evaluate", "ExpressionError", "FUNCTIONS"]

#: The functions an expression may call: fastad's scalar math functions.
FUNCTIONS = tuple(ops.UNARY) + tuple(ops.BINARY_FUNCTIONS) + ("where", "clip")

_BINOPS = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
    ast.Pow: lambda x, y: x ** y,
}
# Two plain numbers are combined as float64 with IEEE results (1/0 = inf,
# (-8)**(1/3) = nan, 10**400 = inf), as the engines do, instead of Python's
# ZeroDivisionError, OverflowError or complex result.
_NUMPY_BINOPS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_SYMBOL = {
    ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<",
    ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
    ast.Invert: "~", ast.Not: "not", ast.Is: "is", ast.IsNot: "is not",
    ast.In: "in", ast.NotIn: "not in",
}
_UNARYOPS = {
    ast.UAdd: lambda x: +x,
    ast.USub: lambda x: -x,
}
_COMPARE = {
    ast.Lt: lambda x, y: x < y,
    ast.LtE: lambda x, y: x <= y,
    ast.Gt: lambda x, y: x > y,
    ast.GtE: lambda x, y: x >= y,
    ast.Eq: lambda x, y: x == y,
    ast.NotEq: lambda x, y: x != y,
}
# What to call the constructs we refuse, by AST node type, for the message.
_REFUSED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Starred: "starred arguments",
    ast.NamedExpr: "assignment expressions",
    ast.IfExp: "conditional expressions (use where(cond, a, b))",
    ast.BoolOp: "and/or",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}
_MAX_EXPR_CHARS = 10_000


class ExpressionError(ValueError):
    """An expression outside the whitelist, or a bad variable binding."""


def _refuse(node, what=None, hint=""):
    """Raise ``ExpressionError("<what> is not allowed (at column N)<hint>")``."""
    if what is None:
        what = _REFUSED.get(type(node), type(node).__name__)
    col = getattr(node, "col_offset", None)
    where = f" (at column {col + 1})" if col is not None else ""
    raise ExpressionError(f"{what} is not allowed{where}{hint}")


def _symbol(op):
    return _SYMBOL.get(type(op), type(op).__name__)


def _check(node, names):
    """Reject anything outside the whitelist; evaluates nothing."""
    if isinstance(node, ast.Expression):
        _check(node.body, names)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            _refuse(node, f"the constant {node.value!r}", "; only numbers are")
    elif isinstance(node, ast.Name):
        _check_name(node, names)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARYOPS:
            _refuse(node, f"the operator {_symbol(node.op)!r}", "; only unary + and - are")
        _check(node.operand, names)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            _refuse(node, f"the operator {_symbol(node.op)!r}", "; only + - * / ** are")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                _refuse(node, f"the comparison {_symbol(op)!r}", "; only < <= > >= == != are")
        _check(node.left, names)
        for comp in node.comparators:
            _check(comp, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            _check(node.func, names)  # names the culprit: attribute, subscript ...
            _refuse(node, "calling the result of an expression",
                    "; only fastad functions can be called, by name")
        fname = node.func.id
        if fname.startswith("__") or fname.endswith("__"):
            _refuse(node.func, f"the dunder name {fname!r}")
        if fname not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function {fname!r}; allowed: {', '.join(FUNCTIONS)}"
            )
        if node.keywords:
            _refuse(node, f"a keyword argument in the call to {fname}",
                    "; pass arguments by position")
        for arg in node.args:
            _check(arg, names)
    else:
        _refuse(node)


def _check_name(node, names):
    name = node.id
    if name.startswith("__") or name.endswith("__"):
        _refuse(node, f"the dunder name {name!r}")
    if name in FUNCTIONS:
        _refuse(node, f"using the function {name!r} as a value", "; call it")
    if name not in names:
        bound = ", ".join(names) or "none"
        raise ExpressionError(f"unknown name {name!r} (bound: {bound})")


def _eval(node, env, functions):
    if isinstance(node, ast.Expression):
        return _eval(node.body, env, functions)
    if isinstance(node, ast.Constant):
        try:
            return float(node.value)
        except OverflowError:  # an int literal beyond float range
            return float("inf")
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        return _UNARYOPS[type(node.op)](_eval(node.operand, env, functions))
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, env, functions)
        right = _eval(node.right, env, functions)
        if isinstance(left, (bool, float)) and isinstance(right, (bool, float)):
            with np.errstate(all="ignore"):
                return float(_NUMPY_BINOPS[type(node.op)](float(left), float(right)))
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, functions)
        result = True
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env, functions)
            result = result and bool(_COMPARE[type(op)](left, right))
            left = right
        return result
    if isinstance(node, ast.Call):
        fn = functions(node.func.id)
        return fn(*[_eval(arg, env, functions) for arg in node.args])
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _check ran first


def parse(expr, names):
    """Parse ``expr`` and check it against the whitelist; returns the AST.

    Raises ``ExpressionError`` for anything outside the whitelist.

    >>> tree = parse("x1*x2 + sin(x1)", ["x1", "x2"])
    >>> parse("x1.__class__", ["x1"])
    Traceback (most recent call last):
    ...
    fastad.cli.ExpressionError: attribute access is not allowed (at column 1)
    """
    if not isinstance(expr, str):
        raise ExpressionError("the expression must be a string")
    if len(expr) > _MAX_EXPR_CHARS:
        raise ExpressionError(f"expression longer than {_MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        col = f" (at column {exc.offset})" if exc.offset else ""
        raise ExpressionError(f"syntax error: {exc.msg}{col}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("expression too deeply nested or malformed") from None
    try:
        _check(tree, list(names))
    except RecursionError:
        raise ExpressionError("expression too deeply nested") from None
    return tree


def evaluate(expr, bindings, engine=None):
    """Evaluate ``expr`` safely with ``bindings`` (name -> value).

    The expression is checked against the whitelist first (``parse``), then
    computed by walking the tree, calling the engine's functions; never
    ``eval``. Values may be floats or ``Var`` objects of the engine.

    >>> import fastad.reference as ref
    >>> evaluate("x1*x2 + 1", {"x1": 2.0, "x2": 3.0}, engine=ref)
    7.0
    """
    if engine is None:
        import fastad as engine  # lazily: the compiled core may not be built yet
    tree = parse(expr, bindings)

    def functions(name):
        fn = getattr(engine, name, None)
        if fn is None:
            raise ExpressionError(f"function {name!r} is not available in this engine")
        return fn

    try:
        return _eval(tree, dict(bindings), functions)
    except RecursionError:
        raise ExpressionError("expression too deeply nested") from None


def _parse_binding(text):
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        raise ExpressionError(f"expected NAME=VALUE, got {text!r}")
    if not name.isidentifier():
        raise ExpressionError(f"{name!r} is not a valid variable name")
    if name.startswith("__") or name.endswith("__"):
        raise ExpressionError(f"the dunder name {name!r} is not allowed")
    if name in FUNCTIONS:
        raise ExpressionError(f"{name!r} is a function name; pick another variable name")
    try:
        number = float(value)
    except ValueError:
        raise ExpressionError(f"value of {name} is not a number: {value!r}") from None
    return name, number


def _explain_parser():
    p = argparse.ArgumentParser(
        prog="python -m fastad explain",
        usage="python -m fastad explain [-h] [--format {text,markdown,json}] [--dot FILE] "
        "[--engine {core,reference}] EXPR [NAME=VALUE ...]",
        epilog="EXPR may use the bound names, numbers, + - * / **, comparisons and "
        "fastad's functions (sin, exp, maximum, where, ...); it is parsed, never eval'ed.",
        description="Print the evaluation trace (values, adjoints, local partials "
        "and gradient) of an expression, e.g.  explain \"x1*x2 + sin(x1)\" x1=2 x2=3",
    )
    p.add_argument("bindings", nargs="*", metavar="NAME=VALUE",
                   help="value of each variable, e.g. x1=2")
    p.add_argument("--format", "-f", dest="fmt", default="text",
                   choices=_FORMATS)
    p.add_argument("--dot", metavar="FILE",
                   help="also write the graph: Graphviz source, or an image if FILE "
                   "ends in .svg or .png (needs the dot program)")
    p.add_argument("--engine", choices=("core", "reference"), default="core",
                   help="which engine records the trace (default: the compiled core)")
    return p


_OPTIONS_WITH_VALUE = ("--format", "-f", "--dot", "--engine")
_FORMATS = ("text", "markdown", "json")


def _split_expression(argv):
    """Take the expression out of ``argv`` before argparse sees it.

    The expression is the first argument that is not an option or an
    option's value; done by hand because argparse would read an expression
    such as ``-x1*x2`` as an unknown option.
    """
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            if i + 1 < len(argv):
                return argv[i + 1], argv[:i] + argv[i + 2:]
            break
        if tok in _OPTIONS_WITH_VALUE:
            i += 2
        elif tok in ("-h", "--help") or (tok.startswith("-") and "=" in tok
                                         and tok.split("=")[0] in _OPTIONS_WITH_VALUE):
            i += 1
        elif tok.startswith("-f") and tok[2:] in _FORMATS:  # -fjson: argparse's short option with its value
            i += 1
        else:
            return tok, argv[:i] + argv[i + 1:]
    return None, argv


def _cmd_explain(argv):
    parser = _explain_parser()
    expr, rest = _split_expression(list(argv))
    args = parser.parse_args(rest)
    if expr is None:
        parser.error("the expression EXPR is required")
    args.expr = expr
    try:
        bindings = {}
        for text in args.bindings:
            name, value = _parse_binding(text)
            if name in bindings:
                raise ExpressionError(f"{name} is bound twice")
            bindings[name] = value
        parse(args.expr, bindings)  # refuse before building anything
    except ExpressionError as exc:
        print(f"fastad explain: error: {exc}", file=sys.stderr)
        return 2

    if args.engine == "reference":
        from . import reference as engine
    else:
        import fastad as engine
    from .explain import explain_tape

    with engine.Tape():
        leaves = {name: engine.Var(value) for name, value in bindings.items()}
        try:
            out = evaluate(args.expr, leaves, engine=engine)
        except ExpressionError as exc:
            print(f"fastad explain: error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # the engine's own error (FastADError, ...): no traceback
            print(f"fastad explain: error while computing: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
    if getattr(out, "tape", None) is None:
        if any(out is leaf for leaf in leaves.values()):
            why = "the expression is a single variable (its derivative is 1)"
        elif isinstance(out, bool):
            why = f"the expression is a comparison ({out}), not a number"
        else:
            why = f"the expression does not depend on any variable (value {float(out)!r})"
        print(f"fastad explain: nothing to differentiate: {why}", file=sys.stderr)
        return 1
    out.backward(retain_graph=True)
    _emit(explain_tape(out.tape, fmt=args.fmt, labels=leaves, output=out), sys.stdout)
    if args.dot:
        from . import dot

        path = args.dot
        try:
            if path.lower().endswith((".svg", ".png")):
                dot.render(out, path, labels=leaves)
            else:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(dot.to_dot(out, labels=leaves))
        except (RuntimeError, OSError) as exc:
            print(f"fastad explain: error: {exc}", file=sys.stderr)
            return 1
    return 0


def _emit(text, stream):
    """Write ``text``; on a terminal that cannot encode ``∂`` write ``d``."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        text = text.replace("∂", "d")
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def _cmd_bench(argv):
    from . import bench  # lazily: heavy, and written separately

    rc = bench.main(argv)
    return 0 if rc is None else int(rc)


_USAGE = """\
usage: python -m fastad COMMAND ...

commands:
  explain EXPR NAME=VALUE ... [--format text|markdown|json] [--dot FILE]
                  print the evaluation trace of an expression, e.g.
                  python -m fastad explain "x1*x2 + sin(x1)" x1=2 x2=3
  bench [--quick|--full]
                  run the benchmarks against the pure-Python reference
"""


def main(argv=None):
    """Run the command line; returns the exit status.

    >>> main(["explain", "x1*x2", "x1=2", "x2=3", "--engine", "reference",
    ...       "--format", "markdown"])    # doctest: +NORMALIZE_WHITESPACE
    | name | label | definition | value | adjoint | local partials |
    |---|---|---|---|---|---|
    | w1 | x1 | input | 2 | 3 | |
    | w2 | x2 | input | 3 | 2 | |
    | w3 | | w1 * w2 | 6 | 1 | ∂w3/∂w1 = 3, ∂w3/∂w2 = 2 |
    <BLANKLINE>
    **gradient**: ∂w3/∂x1 = 3, ∂w3/∂x2 = 2
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "explain":
            return _cmd_explain(rest)
        if cmd == "bench":
            return _cmd_bench(rest)
    except SystemExit as exc:  # argparse: --help or a usage error
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    print(f"fastad: unknown command {cmd!r}\n{_USAGE}", end="", file=sys.stderr)
    return 2
