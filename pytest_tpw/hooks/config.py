"""From pytest's configuration to pytest-tpw's: settings from flags and ini keys, markers.

Both are validated before anything runs, with the messages of :mod:`pytest_tpw.config`
turned into ``pytest.UsageError``: a bad flag stops the run at start, a bad marker at
collection (measured or not), naming the test and the argument.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_tpw.config.options import FLAG, dest, ini_name
from pytest_tpw.config.settings import MarkerArgs, Settings, build, parse_fraction, parse_marker
from pytest_tpw.errors import MarkerError, SettingError


def _lookup(config: pytest.Config) -> Any:
    def raw(row: tuple[Any, ...]) -> tuple[str | None, str]:
        """One row's raw text and where it came from: its flag, else its ini key."""
        name = ini_name(row)
        flag = row[FLAG]
        if flag is not None:
            given = config.getoption(dest(flag))
            if isinstance(given, list):
                given = ",".join(given)
            if given is True:
                return "true", flag
            if given is not None:
                return str(given), flag
        if name is not None:
            ini = config.getini(name)
            if isinstance(ini, str) and ini.strip():
                return ini, f"ini {name}"
        return None, "default"

    return raw


def configure(config: pytest.Config) -> Settings:
    """The session's settings; a bad value is a ``pytest.UsageError`` naming its source."""
    enabled = bool(config.getoption("tpw")) or bool(config.getini("tpw"))
    try:
        settings = build(_lookup(config), enabled)
    except SettingError as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None
    if settings.gpus_per_worker:
        from pytest_tpw.hooks.xdist import check_gpus_per_worker

        check_gpus_per_worker(config, settings.gpus_per_worker)
    return settings


def noise_floor(config: pytest.Config, settings: Settings | None) -> float:
    """The session's noise floor: from its settings when measuring, else read alone (a
    plain run parses nothing else, but checks markers against it just the same)."""
    if settings is not None:
        return settings.noise_floor
    from pytest_tpw.config.settings import ROWS

    raw, where = _lookup(config)(ROWS["noise_floor"])
    if raw is None:
        return Settings().noise_floor
    try:
        return parse_fraction(raw)
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-tpw: {where} = {raw!r}: {exc}") from None


def read_markers(
    config: pytest.Config, items: list[pytest.Item], key: pytest.StashKey[MarkerArgs]
) -> None:
    """Validate the ``@pytest.mark.tpw`` of each item (its own or a parent's) and keep it in
    ``item.stash[key]``; every bad one is named in one ``pytest.UsageError``."""
    from pytest_tpw.hooks.plugin import SETTINGS_KEY

    floor = noise_floor(config, config.stash.get(SETTINGS_KEY, None))
    problems = []
    for item in items:
        marker = item.get_closest_marker("tpw")
        if marker is None:
            continue
        try:
            args = parse_marker(item.nodeid, marker.args, marker.kwargs)
            args.check(item.nodeid, floor)
        except MarkerError as exc:
            problems.append(str(exc))
            continue
        item.stash[key] = args
    if problems:
        raise pytest.UsageError("pytest-tpw: invalid marker(s):\n  " + "\n  ".join(problems))
