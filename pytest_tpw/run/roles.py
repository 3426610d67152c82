"""What a process does with its results: the :class:`Controller` decides, reports and writes;
a :class:`Worker` (a pytest-xdist worker) sends them to the controller as plain data.

The hooks ask the session's role, never whether they run on a worker: whether compared
tests' reports are held for the run's verdicts, what a test's teardown report carries, who
decides the final verdicts, who prints and who writes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tpw.run.session import TpwSession

#: The teardown report property that carries one test's results from a worker.
PAYLOAD_PROPERTY = "pytest_tpw.payload"


class Role(abc.ABC):
    """What this process does with its results."""

    #: True for a process whose results travel to another one (a pytest-xdist worker).
    sends_results = False

    def __init__(self, session: TpwSession) -> None:
        self.session = session

    @property
    def decides(self) -> bool:
        """True when this process takes the run's final verdicts (not a worker)."""
        return not self.sends_results

    @property
    def holds_reports(self) -> bool:
        """True when compared tests' reports wait here for the run's final verdicts."""
        return self.decides

    @abc.abstractmethod
    def reports(self) -> bool:
        """True when this process prints the ``tokens per joule`` section."""

    def teardown_properties(self, nodeid: str) -> list[tuple[str, object]]:
        """What a test's teardown report carries besides its JUnit properties."""
        return []

    def take(self, properties: Sequence[tuple[str, object]]) -> list[tuple[str, object]]:
        """A report's properties, less the results another process streamed in them (merged
        into this session)."""
        kept = []
        for name, value in properties:
            if name == PAYLOAD_PROPERTY and isinstance(value, dict) and self.decides:
                self.session.merge(value)
            else:
                kept.append((name, value))
        return kept

    @abc.abstractmethod
    def finish(
        self,
        interrupted: bool,
        sink: MutableMapping[str, Any],
        environment_hook: Callable[[], None],
    ) -> bool:
        """Send or write the results; False when an output could not be written."""


class Controller(Role):
    """A plain session or pytest-xdist's controller: reports and writes every output."""

    def reports(self) -> bool:
        return not self.session.quiet

    def finish(
        self,
        interrupted: bool,
        sink: MutableMapping[str, Any],
        environment_hook: Callable[[], None],
    ) -> bool:
        if self.session.quiet:
            return True
        from pytest_tpw.run.outputs import write_outputs

        return write_outputs(self.session, interrupted, environment_hook)


class Worker(Role):
    """A pytest-xdist worker: its results travel to the controller, which reports them.

    Each test's results ride on its teardown report, so a worker killed mid-run loses only
    the measurement it was taking; at the end all of them go into ``workeroutput`` too (the
    controller merges by measurement, so twice is once).
    """

    #: The key of this plugin's payload in xdist's ``workeroutput``.
    PAYLOAD_KEY = "pytest_tpw"
    sends_results = True

    def reports(self) -> bool:
        return False

    def teardown_properties(self, nodeid: str) -> list[tuple[str, object]]:
        return [(PAYLOAD_PROPERTY, self.session.payload(nodeid))]

    def finish(
        self,
        interrupted: bool,
        sink: MutableMapping[str, Any],
        environment_hook: Callable[[], None],
    ) -> bool:
        sink[self.PAYLOAD_KEY] = self.session.payload()
        return True
