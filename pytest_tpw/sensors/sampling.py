"""Energy from power: a thread that samples instant power while one window is open, and
the trapezoidal integral of its samples.

Sensors whose hardware gives power rather than an energy counter (NVML boards without the
counter, Jetson's INA3221 rails, an AMD board without ``amdsmi_get_energy_count``) integrate
it here. The sampler runs only while a window is open, so a session between tests costs
nothing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress


def trapezoid_joules(samples: Sequence[tuple[float, float]]) -> float:
    """Energy of ``(seconds, watts)`` samples, by the trapezoidal rule, in joules."""
    pairs = itertools.pairwise(samples)
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in pairs)


def wait_event(event: threading.Event, seconds: float) -> bool:
    """The default wait between samples (tests replace it to drive a fake clock)."""
    return event.wait(seconds)


class PowerSampler:
    """Samples the instant power of some domains on a thread while one window is open.

    ``read(domain)`` returns watts. Each sample is stamped with the middle of its read.
    ``start`` takes the opening sample on the caller's thread; ``stop`` the closing one and
    re-raises whatever the thread hit (the domain whose read failed is in ``failed``).
    """

    def __init__(
        self,
        read: Callable[[str], float],
        domains: Sequence[str],
        clock: Callable[[], float],
        wait: Callable[[threading.Event, float], bool],
        interval_s: float,
        name: str = "tpw-power",
    ) -> None:
        self._read, self._domains, self._clock = read, tuple(domains), clock
        self._wait, self._interval_s = wait, interval_s
        self._stop = threading.Event()
        self._error: BaseException | None = None
        #: The domain whose read failed, if one did.
        self.failed: str | None = None
        self.samples: dict[str, list[tuple[float, float]]] = {d: [] for d in self._domains}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def sample(self) -> None:
        for domain in self._domains:
            t0 = self._clock()
            try:
                watts = self._read(domain)
            except BaseException:
                self.failed = domain
                raise
            self.samples[domain].append(((t0 + self._clock()) / 2.0, watts))

    def _run(self) -> None:
        try:
            while not self._wait(self._stop, self._interval_s):
                self.sample()
        except BaseException as exc:  # re-raised in the main thread by stop()
            self._error = exc

    def stop(self, final_sample: bool = True) -> None:
        """Stop the thread, then take the closing sample; re-raise what the thread hit."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise self._error
        if final_sample:
            self.sample()

    def joules(self) -> dict[str, float]:
        """Each domain's integrated energy over the samples taken."""
        return {domain: trapezoid_joules(s) for domain, s in self.samples.items()}

    def abandon(self) -> None:
        """Stop a sampler whose window is being given up; nothing it raises matters now."""
        with suppress(Exception):
            self.stop(final_sample=False)
