"""Every public docstring example runs (doctest), and so does every Python
snippet of the README, with the values its comments promise."""
import doctest
import importlib
import pathlib
import re

import numpy as np
import pytest

MODULES = ["fastad", "fastad._core", "fastad._replay", "fastad.functional", "fastad.compiled",
           "fastad.array", "fastad.explain", "fastad.dot", "fastad.check", "fastad.cli"]
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    import fastad
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"fad": fastad, "np": np},
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no examples"


def test_every_public_name_has_an_example():
    import fastad
    missing = [n for n in fastad.__all__ if ">>>" not in (getattr(fastad, n).__doc__ or "")]
    assert missing == []


def readme_snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_snippets_run_and_print_what_they_say(capsys):
    snippets = readme_snippets()
    assert len(snippets) >= 4
    namespace = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), namespace)
    fad = namespace["fad"]
    assert (namespace["z"].value, namespace["x"].grad, namespace["y"].grad) == (
        6.909297426825682, 2.5838531634528574, 2.0)
    assert np.array_equal(namespace["a"].grad, [4.0, 2.0, 4.0]) and namespace["w"].grad == 14.0
    cf = namespace["cf"]
    assert cf.grad([3.0, 4.0]) == [6.0, 8.0] and cf.grad([-1.0, 4.0]) == [4.0, -1.0]
    W = np.full((784, 10), 0.01)
    assert namespace["dW"].shape == (784, 10) and type(namespace["cl"].traces[0]).__name__ == "ArrayTrace"
    want = fad.value_and_grad(namespace["layer_loss"])(W)
    assert namespace["value"] == want[0] and np.array_equal(namespace["dW"], want[1])
    g = namespace["g"]
    assert g["W"].shape == (3, 4) and g["v"].shape == (4,)
    blocks = fad.hessian(lambda x, y: x * x * y, argnums=(0, 1))(2.0, 3.0)
    assert [[float(h) for h in row] for row in blocks] == [[6.0, 4.0], [4.0, 0.0]]
    assert isinstance(fad, type(np))
    printed = capsys.readouterr().out
    assert "6.909297426825682 2.5838531634528574 2.0" in printed
