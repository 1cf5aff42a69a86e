"""pytest-benchmark setup for fastad's benchmarks.

    python -m pytest benchmarks                    # full sizes (several minutes)
    python -m pytest benchmarks --quick-bench      # small sizes, a smoke run
    FASTAD_BENCH_QUICK=1 python -m pytest benchmarks

The normal test run does not collect this folder (``testpaths = ["tests"]``).
At the end of the session a ratio table is printed: for every workload and
phase, median(reference) / median(fastad) and median(fastad) / median(float),
then the targets of the issues (reported, never asserted).
"""
import gc
import os

import pytest

from fastad import _workloads as W

_RESULTS = pytest.StashKey()


def pytest_addoption(parser):
    parser.addoption("--quick-bench", action="store_true", default=False,
                     help="fastad benchmarks at small sizes (also FASTAD_BENCH_QUICK=1)")


def quick_mode(config):
    env = os.environ.get("FASTAD_BENCH_QUICK", "").strip().lower()
    return config.getoption("--quick-bench") or env in ("1", "true", "yes", "on")


def pytest_configure(config):
    config.stash[_RESULTS] = {"medians": {}, "tapes": {}, "workloads": {}}


@pytest.fixture(scope="session")
def quick(pytestconfig):
    return quick_mode(pytestconfig)


@pytest.fixture(scope="session")
def catalogue(quick, pytestconfig):
    """Every workload at this run's sizes, built once. The program rows are
    then frozen out of the cycle collector: they are the harness's data, not
    what is timed, and a 1M-row program would otherwise weigh on every
    full collection the engines trigger."""
    wls = {wl.name: wl for wl in W.catalogue(quick=quick)}
    pytestconfig.stash[_RESULTS]["workloads"] = wls
    gc.collect()
    gc.freeze()
    yield wls
    gc.unfreeze()


@pytest.fixture(scope="session")
def engines():
    fast, ref = W.engines()
    return {"float": W.FLOAT, "fastad": fast, "reference": ref}


@pytest.fixture
def record_result(pytestconfig):
    """``record_result(wl, engine_name, phase, benchmark)``: keep the median
    (seconds per call) for the summary table."""
    def record(wl, engine_name, phase, benchmark):
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: nothing was measured
            return
        median = stats.stats.median / wl.calls
        pytestconfig.stash[_RESULTS]["medians"][(wl.name, engine_name, phase)] = median
    return record


@pytest.fixture(scope="session")
def tape_size(pytestconfig):
    """``tape_size(wl, engine)``: :func:`fastad._workloads.tape_info`, once
    per workload and engine (a full-size reference recording takes seconds).
    The table reports the core's tapes, or the reference's where the core
    did not run."""
    cache = {}

    def size(wl, engine):
        key = (wl.name, engine.name)
        if key not in cache:
            cache[key] = info = W.tape_info(wl, engine)
            tapes = pytestconfig.stash[_RESULTS]["tapes"]
            if engine.name == "fastad" or wl.name not in tapes:
                tapes[wl.name] = info
        return cache[key]
    return size


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    res = config.stash.get(_RESULTS, None)
    if not res or not res["medians"]:
        return
    from fastad.bench import header, report

    order = [w for w in W.NAMES if w in res["workloads"]]
    wls = [res["workloads"][w] for w in order]
    mode = "quick" if quick_mode(config) else "full"
    tr = terminalreporter
    tr.write_sep("=", f"fastad ratio table ({mode} sizes)")
    fast, ref = W.engines()
    layout = W.row_bytes(fast or ref)
    for line in header() + [""] + report(wls, res["medians"], res["tapes"], layout):
        tr.write_line(line)
    tr.write_line("")
    tr.write_line("(pytest-benchmark times above are per round of a body: the seed "
                  f"workload's bodies run {W.SEED_CALLS:,} calls a round; this table is per call)")
