"""The plugin's entry point: options, the marker, the fixtures, and the hooks of every run.

What runs without ``--tpw`` is here, and it stays cheap: a plain run registers the options,
reads the markers (a bad one is refused, measured or not) and runs each fixture's work once.
Everything that measures lives in :mod:`pytest_tpw.hooks.measuring`, registered only when
something is measured; each hook here hands its work to its owner and decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_tpw.config.options import (
    FALSE_WORDS,
    FLAG,
    HELP,
    METAVAR,
    OPTIONS,
    PARSER,
    TRAITS,
    dest,
    ini_name,
    marker_help,
)
from pytest_tpw.hooks import hookspecs

if TYPE_CHECKING:  # the stash keys below name these in strings: imported for mypy only
    from pytest_tpw.config.settings import MarkerArgs, Settings  # noqa: F401
    from pytest_tpw.measure.meter import TokensPerJoule
    from pytest_tpw.run.session import TpwSession  # noqa: F401
    from pytest_tpw.serving.servers import ServedModel

SETTINGS_KEY = pytest.StashKey["Settings"]()
SESSION_KEY = pytest.StashKey["TpwSession"]()
MARKER_KEY = pytest.StashKey["MarkerArgs"]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``tpw`` option group and every ini twin, from the options table."""
    group = parser.getgroup("tpw", "tokens per joule (pytest-tpw)")
    group.addoption(
        "--tpw",
        action="store_true",
        default=False,
        dest="tpw",
        help="measure tokens per joule in tests that use the tpw fixture",
    )
    parser.addini("tpw", "measure tokens per joule, as --tpw does", type="bool", default=False)
    for row in OPTIONS:
        flag, ini = row[FLAG], ini_name(row)
        if flag is not None:
            # argparse %-formats help texts: "5%" must be written "5%%" there
            switch = row[PARSER] == "switch" or row[PARSER].startswith("mode=")
            kind = "store_true" if switch else None
            group.addoption(
                flag,
                action=kind or ("append" if "repeat" in row[TRAITS] else "store"),
                default=None,
                dest=ini,
                help=row[HELP].replace("%", "%%"),
                **({} if kind else {"metavar": row[METAVAR]}),
            )
        if ini is not None:
            parser.addini(ini, row[HELP] + (f" (ini twin of {flag})" if flag else ""), default="")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """On an xdist worker, pin its GPUs before any conftest can initialise CUDA."""
    per_worker = getattr(early_config.known_args_namespace, "tpw_gpus_per_worker", None) or (
        early_config.getini("tpw_gpus_per_worker")
    )
    if per_worker:
        from pytest_tpw.hooks.xdist import pin_worker

        pin_worker(str(per_worker))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker_help())
    if not _measuring(config):
        return  # a plain run parses nothing more: the off mode stays cheap
    from pytest_tpw.hooks.config import configure

    config.stash[SETTINGS_KEY] = configure(config)


def _measuring(config: pytest.Config) -> bool:
    """``--tpw``, or a flag or ini key that measures too (writing baselines, GPU pinning)."""
    if config.getoption("tpw") or config.getini("tpw"):
        return True
    for row in OPTIONS:
        flag = row[FLAG]
        if flag is not None and "measures" in row[TRAITS]:
            name = dest(flag)
            ini = str(config.getini(name)).strip().lower()
            if config.getoption(name) or ini not in FALSE_WORDS:
                return True  # a bad ini value counts too, so that parsing names it
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Open the sensor and read the baselines before any test runs: bad input fails at once."""
    settings = session.config.stash.get(SETTINGS_KEY, None)
    if settings is not None and settings.enabled:
        from pytest_tpw.hooks.measuring import start

        session.config.stash[SESSION_KEY] = start(session.config, settings)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``@pytest.mark.tpw`` at collection, measured or not."""
    marked: list[pytest.Item] = []
    parents: dict[int, bool] = {}
    for item in items:
        # own markers first, each parent once: a plain run pays almost nothing per test
        own = item.own_markers
        if own and any(m.name == "tpw" for m in own):
            marked.append(item)
            continue
        parent = item.parent
        found = parents.get(id(parent))
        if found is None:
            chain = parent.listchain() if parent is not None else []
            found = parents[id(parent)] = any(m.name == "tpw" for n in chain for m in n.own_markers)
        if found:
            marked.append(item)
    if marked:
        from pytest_tpw.hooks.config import read_markers

        read_markers(config, marked, MARKER_KEY)


@pytest.fixture
def tpw(request: pytest.FixtureRequest) -> Generator[TokensPerJoule, None, None]:
    """Measure tokens per joule of the work given to it (with ``pytest --tpw``).

    Call form: ``out = tpw(fn, *args, tokens=int_or_callable, name=None, **kwargs)`` runs
    ``fn`` in warm-up and measured windows (repeating short calls so that each window lasts
    the sensor's minimum) and returns the last result. Loop form:
    ``for w in tpw.rounds(): with w: ...; w.add_tokens(n)``. Coroutines:
    ``await tpw.acall(fn, ..., tokens=...)``. ``tpw.result`` holds the last measurement's
    tokens_per_joule, joules_per_token, watts, tokens_per_second, n, ci, verdict, samples
    (``tpw.results`` every measurement of the test by name). With a baseline, the verdict
    decides the outcome: REGRESSED fails the test. Without ``--tpw`` the work runs once,
    nothing is measured and ``tpw.result`` is None, but misuse (bad ``tokens=``, a window
    not entered, two unnamed measurements) is refused just the same.
    """
    tpw_session = request.config.stash.get(SESSION_KEY, None)
    if tpw_session is None:
        from pytest_tpw.hooks.fixtures import off_meter

        yield from off_meter(request)
    else:
        from pytest_tpw.hooks.measuring import tpw_meter

        yield from tpw_meter(request, tpw_session)


@pytest.fixture
def tpw_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Generator[Callable[..., ServedModel], None, None]:
    """Start a served model and measure it from its client: ``tpw_server(command, ...)``.

    ``model = tpw_server(["vllm", "serve", "m", "--port", "{port}"])`` runs the command
    (``{port}`` becomes a free port; ``ready_path="/v1/models"``, ``env=``, ``cwd=``,
    ``startup_timeout_s=120``), waits until it answers, and aims the session's sensor at it:
    NVML measures the GPUs its process tree uses (they must be measured and the server's
    alone: NVML has no per-process energy), ``cpu-estimate`` the tree's CPU time. Drive it
    with ``model.client()`` (``openai.OpenAI``) or ``model.async_client()`` inside ``tpw(...)``
    and count tokens from the responses' usage (``pytest_tpw.count.openai_tokens``). Every
    server stops at the end of the test, pass or fail; its log tail goes to the report.
    ``gpus=N`` and ``hosts=[...]`` say what the deployment spans: a window that measured
    less fails (as the marker's ``gpus``/``hosts``). Without ``--tpw`` the server runs and
    nothing is measured.
    """
    from pytest_tpw.hooks.fixtures import served_models

    tpw_session = request.config.stash.get(SESSION_KEY, None)
    yield from served_models(request, tmp_path, tpw_session.sensor if tpw_session else None)
