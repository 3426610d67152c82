"""A fake Jetson sysfs tree in a temporary directory: INA3221 rails in both driver layouts.

Laid out as the Jetson developer guides and Zeus's ``zeus/device/soc/jetson.py`` describe:

- JetPack >= 5 (``ina3221`` hwmon driver): ``sys/bus/i2c/drivers/ina3221/<bus-addr>`` is a
  symlink to the device under ``sys/devices``; the rails sit in ``hwmon/hwmonN/`` as
  ``in<N>_label``, ``in<N>_input`` (mV), ``curr<N>_input`` (mA), N from 1, with the chip's
  ``in7_label`` "sum of shunt voltages" summation channel and ``update_interval`` (ms).
- JetPack 4 (``ina3221x`` IIO driver): ``<bus-addr>/iio:device0/`` with ``rail_name_<N>``,
  ``in_power<N>_input`` (mW), ``in_voltage<N>_input`` (mV), ``in_current<N>_input`` (mA), N
  from 0.

Each device also has the ``driver`` and ``subsystem`` symlinks real sysfs has (a scanner that
follows them loops or counts twice). ``proc/device-tree/model`` ends in a NUL, as on a board.
Tests set each rail's power with :meth:`FakeJetsonSysfs.set_power` between reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Rail labels per board, per chip, from the Jetson developer guides (energymon's table).
ORIN_NX = {"1-0040": ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")}
AGX_ORIN = {
    "1-0040": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
    "1-0041": ("NC", "VDDQ_VDD2_1V8AO", "NC"),
}
NANO = {"6-0040": ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU")}
AGX_XAVIER = {"1-0040": ("GPU", "CPU", "SOC"), "1-0041": ("CV", "VDDRQ", "SYS5V")}


@dataclass(frozen=True)
class RailFiles:
    """Where one rail's files are, and how the layout names them."""

    directory: Path
    channel: int
    layout: str  # "hwmon" | "iio"

    @property
    def voltage(self) -> Path:
        name = "in{}_input" if self.layout == "hwmon" else "in_voltage{}_input"
        return self.directory / name.format(self.channel)

    @property
    def current(self) -> Path:
        name = "curr{}_input" if self.layout == "hwmon" else "in_current{}_input"
        return self.directory / name.format(self.channel)

    @property
    def power(self) -> Path:
        name = "power{}_input" if self.layout == "hwmon" else "in_power{}_input"
        return self.directory / name.format(self.channel)


class FakeJetsonSysfs:
    """Builds INA3221 chips under ``root`` and sets their rails' readings."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.drivers = root / "sys" / "bus" / "i2c" / "drivers"
        self.devices = root / "sys" / "devices" / "platform" / "i2c"
        self.model_path = root / "proc" / "device-tree" / "model"
        self.release_path = root / "etc" / "nv_tegra_release"
        self.drivers.mkdir(parents=True)
        self.devices.mkdir(parents=True)
        self.rails: dict[str, RailFiles] = {}
        self._hwmon_count = 0

    def set_model(
        self, model: str = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    ) -> None:
        self.model_path.parent.mkdir(parents=True, exist_ok=True)
        self.model_path.write_bytes(model.encode() + b"\x00")

    def set_release(self, major: int = 36, revision: str = "4.3") -> None:
        self.release_path.parent.mkdir(parents=True, exist_ok=True)
        self.release_path.write_text(
            f"# R{major} (release), REVISION: {revision}, GCID: 38968081, BOARD: generic, "
            "EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n",
            encoding="ascii",
        )

    def _device(self, driver: str, bus_addr: str) -> Path:
        """The device directory, linked from the driver as sysfs does, with its symlinks."""
        driver_dir = self.drivers / driver
        driver_dir.mkdir(exist_ok=True)
        device = self.devices / bus_addr
        device.mkdir()
        (device / "name").write_text(f"{driver}\n", encoding="ascii")
        os.symlink(driver_dir, device / "driver")
        os.symlink(self.root / "sys" / "bus" / "i2c", device / "subsystem")
        os.symlink(device, driver_dir / bus_addr)
        return device

    def hwmon_chip(
        self,
        bus_addr: str,
        labels: tuple[str, str, str],
        *,
        hwmon: str = "hwmon3",
        update_interval_ms: int | None = 7,
        power_files: bool = False,
        voltage_current: bool = True,
    ) -> Path:
        """An ``ina3221`` chip (JetPack >= 5): rails in ``hwmon/<hwmon>``, channels 1..3.

        ``power_files`` adds ``power<N>_input`` (microwatts, the hwmon ABI's unit);
        ``voltage_current=False`` leaves only those.
        """
        directory = self._device("ina3221", bus_addr) / "hwmon" / hwmon
        directory.mkdir(parents=True)
        (directory / "name").write_text("ina3221\n", encoding="ascii")
        if update_interval_ms is not None:
            (directory / "update_interval").write_text(f"{update_interval_ms}\n", "ascii")
        for channel, label in enumerate(labels, start=1):
            (directory / f"in{channel}_label").write_text(f"{label}\n", encoding="ascii")
            (directory / f"in{channel + 3}_input").write_text("12\n", encoding="ascii")  # shunt
            files = RailFiles(directory, channel, "hwmon")
            if label != "NC":
                self.rails[label] = files
            if voltage_current:
                files.voltage.write_text("0\n", encoding="ascii")
                files.current.write_text("0\n", encoding="ascii")
            if power_files:
                files.power.write_text("0\n", encoding="ascii")
        # the summation channel: a label and a voltage, and its current is curr4, not curr7
        (directory / "in7_label").write_text("sum of shunt voltages\n", encoding="ascii")
        (directory / "in7_input").write_text("36\n", encoding="ascii")
        (directory / "curr4_input").write_text("9999\n", encoding="ascii")
        return directory

    def iio_chip(
        self,
        bus_addr: str,
        labels: tuple[str, str, str],
        *,
        power_files: bool = True,
    ) -> Path:
        """An ``ina3221x`` chip (JetPack 4): rails in ``iio:device0``, channels 0..2."""
        directory = self._device("ina3221x", bus_addr) / "iio:device0"
        directory.mkdir()
        for channel, label in enumerate(labels):
            if label == "NC":
                continue  # the L4T driver has no rail_name file for an unconnected channel
            (directory / f"rail_name_{channel}").write_text(f"{label}\n", encoding="ascii")
            files = RailFiles(directory, channel, "iio")
            self.rails[label] = files
            files.voltage.write_text("0\n", encoding="ascii")
            files.current.write_text("0\n", encoding="ascii")
            if power_files:
                files.power.write_text("0\n", encoding="ascii")
        return directory

    def board(self, chips: dict[str, tuple[str, str, str]], layout: str = "hwmon") -> None:
        """Every chip of a board (see ``ORIN_NX``...), in one layout, plus its model file."""
        for bus_addr, labels in chips.items():
            if layout == "hwmon":
                self._hwmon_count += 1
                self.hwmon_chip(bus_addr, labels, hwmon=f"hwmon{self._hwmon_count + 2}")
            else:
                self.iio_chip(bus_addr, labels)
        self.set_model()
        self.set_release()

    def set_power(self, label: str, millivolts: int, milliamps: int) -> float:
        """Set one rail's reading in every file it has; returns its power in watts."""
        files = self.rails[label]
        microwatts = millivolts * milliamps
        if files.layout == "iio" and files.power.exists() and microwatts % 1000:
            raise ValueError("in_power is whole milliwatts: pick mV x mA divisible by 1000")
        watts = microwatts / 1e6
        for path, value in (
            (files.voltage, millivolts),
            (files.current, milliamps),
            (files.power, microwatts if files.layout == "hwmon" else microwatts // 1000),
        ):
            if path.exists():
                path.write_text(f"{value}\n", encoding="ascii")
        return watts

    def write(self, path: Path, text: str) -> None:
        """Write raw text into a rail file (for garbage-content tests)."""
        path.write_text(text, encoding="ascii")
