"""Is a measured result physically plausible? Checked before it is stored.

A result whose average power is below the devices' measured idle power, above the most the
measured devices can draw, or whose tokens per joule lies far beyond anything published for
the device class was almost certainly measured wrongly: other devices than the work's, a
device counted twice (MIG instances summed, every rank summing a host-wide counter), a node
missing from the sum, or a token count that includes padding. Such a result gets a
:class:`~pytest_tpw.hooks.warning_types.TpwImplausibleWarning` naming the test, the figure,
the bound and the likely causes; it is still stored (a warning, not an error: the checks
rest on published figures and a one-second idle reading, not on proof).

Each check uses only bounds that exist: the idle bound needs an idle window (measured
sensors: never ``sim`` nor ``cpu-estimate``), the maximum needs every measured device's
``max_power_w`` (``describe()["devices"]``), the tokens-per-joule band a measured sensor on a
device class of :data:`DEVICE_CLASSES`. The references and their sources are in
docs/sensors.md ("The plausibility guard").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A result's average power may sit this far below the idle power before it is implausible:
#: NVML's power reading is good to about ±5 %, a one-second idle window's edges cost up to
#: one counter update (100 ms, 10 %), and a test's window at its minimum length as much
#: again; 25 % covers the three with room to spare.
IDLE_SLACK = 0.25
#: ... and this far above the devices' maximum power: the same reading and edge errors, and
#: the short excursions above the limit that a board's power controller allows. A double
#: count is at least twice the figure, far beyond it.
MAX_SLACK = 0.25


@dataclass(frozen=True)
class Reference:
    """One published figure for a device class."""

    what: str
    tokens_per_joule: float
    source: str


@dataclass(frozen=True)
class DeviceClass:
    """A kind of device with published tokens-per-joule figures and the ceiling beyond
    which a result is implausible (``ceiling``: tokens per joule)."""

    name: str
    #: Lower-case words of a device's model name that put it in the class, whole words or
    #: runs of words joined by ``-`` (``hl-325``); the last may add one letter: ``mi300x``,
    #: ``l40s``, ``HL-325L``; ``a4000`` is not ``a40``.
    markers: tuple[str, ...]
    ceiling: float
    references: tuple[Reference, ...]
    #: Typical idle power of one device (watts), for the docs and messages.
    idle_w: tuple[float, float]


#: Model-name words of data-centre accelerators: NVIDIA Hopper, Blackwell, Ampere, Ada; AMD
#: Instinct; Intel Gaudi (HLML names a module ``HL-225``, ``HL-325L``) and Data Center GPU Max.
_DATA_CENTRE_GPUS = (
    "h100", "h200", "h800", "h20", "gh200", "b100", "b200", "gb200",
    "a100", "a800", "a30", "a40", "l40",
    "mi250", "mi300", "mi325", "mi355",
    "hl-205", "hl-225", "hl-325", "gaudi2", "gaudi3", "gpu-max",
)  # fmt: skip

#: The data-centre GPU class: the best published decode figure is about 20 tok/J (a 7B
#: model at batch 128 on one H100). Tokens per joule falls at best in proportion to the
#: model's parameters (the bytes read and the FLOPs per token), so 10x that (200 tok/J)
#: would need a model under 1B parameters served at a batch and an efficiency beyond any
#: published figure; the errors this guards against (MIG instances summed, a missing node,
#: padded tokens) multiply the figure by 2 to 50 and more.
DATA_CENTRE_GPU = DeviceClass(
    name="data-centre GPU",
    markers=_DATA_CENTRE_GPUS,
    ceiling=200.0,
    references=(
        Reference(
            "Llama-3.1-8B decode, batch 1, 1x H100: bandwidth-bound (3.35 TB/s over ~16 GB of "
            "weights, <= ~200 tok/s at 300-400 W)",
            0.6,
            "arithmetic from the H100 SXM data sheet",
        ),
        Reference(
            "A100, Qwen2.5-3B; idle 62 W",
            2.9,
            "community measurement",
        ),
        Reference(
            "Llama-3.1-8B, batch 64, 1x H100, vLLM 0.11.1: 0.12 J/token",
            8.3,
            'ML.ENERGY blog, "LLM Inference Energy: A Longitudinal Analysis"',
        ),
        Reference(
            "Qwen3-8B, 1x H100, max_num_seqs 128",
            10.7,
            "ML.ENERGY benchmark documentation",
        ),
        Reference(
            "Mistral-7B, 1x H100, batch 128",
            20.0,
            "vendor blog post (unaudited)",
        ),
    ),
    idle_w=(60.0, 80.0),
)

DEVICE_CLASSES: tuple[DeviceClass, ...] = (DATA_CENTRE_GPU,)


def _in_class(model: str, cls: DeviceClass) -> bool:
    name = "-".join(w for w in re.split(r"[^a-z0-9]+", model.lower()) if w)
    return any(
        re.search(rf"(?:^|-){re.escape(marker)}[a-z]?(?:-|$)", name) for marker in cls.markers
    )


def device_class(models: Iterable[str]) -> DeviceClass | None:
    """The class every one of ``models`` belongs to, or None (none given, or unknown)."""
    names = list(models)
    if not names:
        return None
    for found in DEVICE_CLASSES:
        if all(_in_class(name, found) for name in names):
            return found
    return None


def max_watts(described: Mapping[str, Any]) -> float | None:
    """The most the measured devices can draw together: the sum of every device's
    ``max_power_w`` in ``describe()["devices"]``; None unless every device gives one."""
    devices = described.get("devices")
    if not isinstance(devices, list) or not devices:
        return None
    values: list[float] = []
    for d in devices:
        v = d.get("max_power_w") if isinstance(d, Mapping) else None
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            return None
        values.append(float(v))
    return sum(values)


@dataclass(frozen=True)
class Bounds:
    """What a session knows to check its results against (each None when it does not)."""

    provenance: str
    idle_watts: float | None = None
    max_watts: float | None = None
    device_class: DeviceClass | None = None

    def scaled(self, devices: int) -> Bounds:
        """The bounds of ``devices`` times as many devices (ranks that sum their windows)."""
        if devices <= 1:
            return self
        idle = None if self.idle_watts is None else self.idle_watts * devices
        most = None if self.max_watts is None else self.max_watts * devices
        return Bounds(self.provenance, idle, most, self.device_class)


#: What happens to an implausible result: the guard warns, it does not decide.
KEPT = "the result is kept, and stored when this run records (a warning, not an error)"

BELOW_IDLE_CAUSES = (
    "likely causes: the devices measured are not the ones that did the work (check "
    "--tpw-devices, CUDA_VISIBLE_DEVICES, --tpw-sensor-select), a device or node missing "
    "from the sum in some windows, a counter read across a reset, or an idle window that "
    "caught the devices still busy at start (see the idle power line)"
)
ABOVE_MAX_CAUSES = (
    "likely causes: a double count (MIG instances or several series of one board summed, "
    "a host-wide counter summed on every rank), more devices measured than their maximum "
    "says (a device list that does not match the hardware), or a window whose seconds are "
    "shorter than the span its energy covers"
)
BAND_CAUSES = (
    "likely causes: a token count that includes padding or prompt tokens (count generated "
    "tokens only), tokens summed twice (every rank counting the global batch), energy of "
    "only some of the devices that did the work (a missing node, --tpw-devices too narrow), "
    "or a window shorter than the work; only a model under 1B parameters at a large batch "
    "comes near it legitimately (then ignore: -W ignore::pytest_tpw.TpwImplausibleWarning)"
)


def check(key: str, watts: float, tokens_per_joule: float, bounds: Bounds) -> list[str]:
    """The sentences saying why ``key``'s result is implausible (empty when it is not):
    average power ``watts`` against idle and maximum power, ``tokens_per_joule`` against
    its device class's ceiling."""
    if bounds.provenance != "measured":
        return []  # estimated and simulated joules carry no physical bound
    fate = KEPT
    found = []
    idle = bounds.idle_watts
    if idle is not None and math.isfinite(watts) and watts < (1.0 - IDLE_SLACK) * idle:
        found.append(
            f"{key}: implausible: average power {watts:.4g} W is below the devices' measured "
            f"idle power {idle:.4g} W (less {IDLE_SLACK:.0%} slack: "
            f"{(1.0 - IDLE_SLACK) * idle:.4g} W); {BELOW_IDLE_CAUSES}; {fate}"
        )
    most = bounds.max_watts
    if most is not None and math.isfinite(watts) and watts > (1.0 + MAX_SLACK) * most:
        found.append(
            f"{key}: implausible: average power {watts:.4g} W is above the measured devices' "
            f"maximum power {most:.4g} W (plus {MAX_SLACK:.0%} slack: "
            f"{(1.0 + MAX_SLACK) * most:.4g} W); {ABOVE_MAX_CAUSES}; {fate}"
        )
    cls = bounds.device_class
    if cls is not None and math.isfinite(tokens_per_joule) and tokens_per_joule > cls.ceiling:
        best = max(r.tokens_per_joule for r in cls.references)
        found.append(
            f"{key}: implausible: {tokens_per_joule:.4g} tokens/J is beyond the {cls.ceiling:g} "
            f"tokens/J ceiling of a {cls.name} ({cls.ceiling / best:.0f}x the best published "
            f"figure, {best:g} tokens/J; docs/sensors.md); {BAND_CAUSES}; {fate}"
        )
    return found


def bounds_for(
    provenance: str,
    idle_watts: float | None,
    described: Mapping[str, Any],
    models: Sequence[str],
) -> Bounds:
    """A session's bounds from its sensor's provenance, idle power, ``describe()`` and
    hardware names."""
    return Bounds(provenance, idle_watts, max_watts(described), device_class(models))
