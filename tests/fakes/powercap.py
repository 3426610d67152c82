"""A fake Linux powercap tree in a temporary directory, laid out like ``/sys/class/powercap``.

Zones sit flat under the root (``intel-rapl:0``, ``intel-rapl:0:0``...) with ``name``,
``energy_uj`` and ``max_energy_range_uj`` files; tests rewrite ``energy_uj`` between reads.
"""

from __future__ import annotations

from pathlib import Path

#: The range a typical Intel package counter reports (2^32 units of 61 uJ).
INTEL_RANGE_UJ = 262_143_328_850


class FakePowercap:
    """Builds zones under ``root`` and sets their counters."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "intel-rapl").mkdir(exist_ok=True)  # the control type, not a zone

    def zone(
        self, zone_id: str, name: str, energy_uj: int = 0, max_range_uj: int = INTEL_RANGE_UJ
    ) -> Path:
        """Add zone ``intel-rapl:<zone_id>`` (``"0"`` or ``"0:2"``); returns its directory."""
        path = self.root / f"intel-rapl:{zone_id}"
        path.mkdir()
        (path / "name").write_text(f"{name}\n", encoding="ascii")
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n", encoding="ascii")
        (path / "enabled").write_text("1\n", encoding="ascii")
        self.set(zone_id, energy_uj)
        return path

    def set(self, zone_id: str, energy_uj: int) -> None:
        """Set the counter of ``intel-rapl:<zone_id>``."""
        self.write(zone_id, f"{energy_uj}\n")

    def write(self, zone_id: str, text: str) -> None:
        """Write raw text into ``energy_uj`` (for garbage-content tests)."""
        (self.root / f"intel-rapl:{zone_id}" / "energy_uj").write_text(text, encoding="ascii")

    def counter(self, zone_id: str) -> Path:
        return self.root / f"intel-rapl:{zone_id}" / "energy_uj"
