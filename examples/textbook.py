"""The reverse-mode examples of the textbooks, traced step by step.

1. z = x1 * x2 + sin(x1) at (x1, x2) = (2, 3):
   dz/dx1 = x2 + cos(x1) = 2.5838531634528574,  dz/dx2 = x1 = 2.
2. y = log(x1) + x1 * x2 - sin(x2) at (2, 5)  (Baydin et al., "Automatic
   differentiation in machine learning: a survey", table 3):
   y = 11.652071455223084, dy/dx1 = 1/x1 + x2 = 5.5,
   dy/dx2 = x1 - cos(x2) = 1.7163378145367738.

``fad.explain(f, *args)`` prints each tape row (w1, w2, ...) with its
definition, value, adjoint and local partials, then the gradient.

    python examples/textbook.py
"""
import argparse
import sys

try:
    import fastad as fad
except ImportError:  # running from a source checkout built in place: use it
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    import fastad as fad


def f1(x1, x2):
    return x1 * x2 + fad.sin(x1)


def f2(x1, x2):
    return fad.log(x1) + x1 * x2 - fad.sin(x2)


EXAMPLES = [
    ("z = x1*x2 + sin(x1) at (2, 3)", f1, (2.0, 3.0)),
    ("y = log(x1) + x1*x2 - sin(x2) at (2, 5)", f2, (2.0, 5.0)),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fmt", choices=("text", "markdown", "json"), default="text")
    args = ap.parse_args(argv)
    results = []
    for title, f, point in EXAMPLES:
        value, grads = fad.value_and_grad(f, argnums=(0, 1))(*point)
        print(title)
        print(fad.explain(f, *point, fmt=args.fmt))
        print(f"value {value!r}, gradient {grads!r}\n")
        results.append((value, grads))
    return results


if __name__ == "__main__":
    main()
