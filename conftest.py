"""Make the tests import the fastad that was built.

`python -m pytest` puts the repository root first on sys.path, so `import
fastad` would find the source folder. After `pip install .` that folder has
no compiled core (the build went into site-packages): then drop the root
from sys.path and test the installed package. After an in-place or editable
build the source folder has its `_core` and is used as it is.
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))

if not glob.glob(os.path.join(ROOT, "fastad", "_core*.so")) + glob.glob(os.path.join(ROOT, "fastad", "_core*.pyd")):
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]
