"""The options table: every ``--tpw-*`` flag, ``tpw_*`` ini key and marker argument, once.

One row per flag or ini key: the setting it feeds, its flag, its default, its parser, its
marker argument, its help. The plugin registers the options from it, :mod:`settings` parses
and combines them, and validates ``@pytest.mark.tpw(...)`` with the same parsers, so a
marker argument follows the rules of its flag.

Every pytest start-up imports this module, measured or not, so the table is one constant
of plain strings (Python builds it when it compiles the module, not each time it runs) and
nothing else is built here. The parsers are named, not referenced: :mod:`settings` owns
them and loads only when something is measured or a marker is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    #: One row: field, flag, scope, default, parser, metavar, marker, traits, help.
    Row = tuple[str, str | None, str, str | None, str, str | None, str | None, str, str]

#: The columns of :data:`OPTIONS`.
FIELD: Final = 0
FLAG: Final = 1
SCOPE: Final = 2
DEFAULT: Final = 3
PARSER: Final = 4
METAVAR: Final = 5
MARKER: Final = 6
TRAITS: Final = 7
HELP: Final = 8

#: Where a row can be set: ``flag`` (a ``--tpw-*`` flag and its ini twin, the flag's name
#: with underscores), ``ini`` (an ini key ``tpw_<field>`` only) or ``marker`` (only as a
#: ``@pytest.mark.tpw`` argument). ``MARKER`` is the shape of the marker argument (None: not
#: settable per test): ``fraction`` (a percentage string or a fraction), ``int``, ``number``,
#: ``devices`` (a list of indices), ``bool``, ``latency`` (a dict of limits) or ``hosts`` (a
#: list of host names). ``TRAITS``:
#: ``measures`` (asking for it measures, as ``--tpw`` does), ``repeat`` (the flag may be
#: given several times). A parser
#: ``mode=X`` is one of the mutually exclusive ways of writing baselines: the flag sets the
#: setting to X.
OPTIONS: tuple[Row, ...] = (
    (
        "baseline_mode", "--tpw-update", "flag", None, "mode=replace", None, None, "measures",
        "accept this session's level: each measured test's baseline history is replaced by "
        "this session (tests that failed record nothing; the replaced sessions stay in "
        "superseded/ for plots); regressions do not fail",
    ),
    (
        "baseline_mode", "--tpw-record", "flag", None, "mode=extend", None, None, "measures",
        "add this session to each measured test's baseline history (the last --tpw-history "
        "are kept), to learn how much sessions differ",
    ),
    (
        "baseline_mode", "--tpw-update-missing", "flag", None, "mode=missing", None, None,
        "measures", "write baselines only for measurements that have none",
    ),
    (
        "baseline_dir", "--tpw-baseline-dir", "flag", ".tpw", "path", "DIR", None, "",
        "where baseline files live: DIR/<hardware-key>.json (default: .tpw)",
    ),
    (
        "strict", "--tpw-strict", "flag", None, "switch", None, None, "",
        "CI mode: no baseline, inconclusive or hardware mismatch fail the test, and a run-wide "
        "stack regression fails the run",
    ),
    (
        "fail_stack", "--tpw-fail-stack", "flag", None, "switch", None, None, "",
        "fail the run when every test moved together beyond the stored runs' spread and the "
        "software stack changed (a stack regression); default: reported, not failed",
    ),
    (
        "tolerance", "--tpw-tolerance", "flag", "5%", "positive_fraction", "P", "fraction", "",
        "the drop in tokens per joule a test is there to catch (default: 5%): a true drop "
        "this large fails most runs, a larger one nearly always, a smaller one rarely (about "
        "1 run in 10 at 3%; docs/verdicts.md)",
    ),
    (
        "noise_floor", "--tpw-noise-floor", "flag", "1%", "fraction", "P", None, "",
        "smallest change worth reporting (default: 1%)",
    ),
    (
        "confidence", "--tpw-confidence", "flag", "0.90", "confidence", "C", None, "",
        "two-sided confidence of reported intervals (default: 0.90)",
    ),
    (
        "fdr", "--tpw-fdr", "flag", "0.05", "positive_fraction", "Q", None, "",
        "false-discovery rate across the suite's regressions (default: 0.05)",
    ),
    (
        "rounds", "--tpw-rounds", "flag", None, "int>=2", "N", "int", "",
        "fixed number of recorded windows (default: adaptive 5-20 against a baseline, 5 "
        "without one, 20 when updating)",
    ),
    (
        "warmup", "--tpw-warmup", "flag", "1", "int>=0", "N", "int", "",
        "windows run and discarded first (default: 1)",
    ),
    (
        "min_window", "--tpw-min-window", "flag", None, "positive_float", "S", None, "",
        "shortest window in seconds (default: the sensor's own)",
    ),
    (
        "sensor", "--tpw-sensor", "flag", "auto", "str", "NAME", None, "",
        "where joules come from: auto, nvml, amdsmi, gaudi, intel-gpu, jetson, apple, rapl, "
        "cpu-estimate, sim, dcgm-exporter, prometheus or a plugin's sensor",
    ),
    (
        "devices", "--tpw-devices", "flag", None, "devices", "LIST", "devices", "",
        "GPUs to measure, as this process indexes them (default: all visible)",
    ),
    (
        "sensor_url", "--tpw-sensor-url", "flag", None, "urls", "URL", None, "repeat",
        "remote GPU telemetry: a dcgm-exporter's metrics URL (http://NODE:9400/metrics, one "
        "per host) for --tpw-sensor dcgm-exporter, or a Prometheus server's URL for "
        "--tpw-sensor prometheus (repeat the flag, or separate with commas)",
    ),
    (
        "sensor_select", "--tpw-sensor-select", "flag", None, "selects", "LABEL=VALUE", None,
        "repeat",
        "remote GPU telemetry: measure only the GPUs whose LABEL is VALUE (hostname, uuid, "
        "pod, namespace, container, gpu, model; values of one label are alternatives, "
        "different labels must all match)",
    ),
    (
        "sensor_interval", None, "ini", None, "positive_float", None, None, "",
        "remote GPU telemetry: seconds between refreshes of the energy counter (the "
        "exporter's collect interval; through Prometheus, the larger of it and the scrape "
        "interval); default: learned by watching the counter at start",
    ),
    (
        "json", "--tpw-json", "flag", None, "path", "PATH", None, "",
        "write every sample, verdict and the environment as JSON to PATH",
    ),
    (
        "export", "--tpw-export", "flag", None, "exports", "FORMAT=PATH", None, "repeat",
        "write an export for dashboards at the end, FORMAT=PATH with FORMAT bencher or "
        "github-action-benchmark (repeat the flag, or separate with commas)",
    ),
    (
        "report", "--tpw-report", "flag", None, "path", "PATH", None, "",
        "write the Markdown report (fit for a pull-request comment) to PATH",
    ),
    (
        "gpus_per_worker", "--tpw-gpus-per-worker", "flag", None, "int>=1", "N", None,
        "measures", "pytest-xdist: give each worker its own N GPUs through CUDA_VISIBLE_DEVICES",
    ),
    (
        "lock_timeout", "--tpw-lock-timeout", "flag", None, "positive_float", "S", None, "",
        "give up a window after waiting this many seconds for another process's device lock "
        "(default: wait; the holder is named after 5 s)",
    ),
    (
        "history", "--tpw-history", "flag", "10", "int>=1", "N", None, "",
        "sessions kept per measurement in a baseline (default: 10)",
    ),
    (
        "superseded", "--tpw-superseded", "flag", "20", "int>=0", "N", None, "",
        "sessions a baseline no longer holds (replaced by an accept or rotated out of the "
        "history) kept per measurement in the baseline folder's superseded/ for plots and "
        "show; never judged against (default: 20; 0 keeps none)",
    ),
    # ini-only tuning of the built-in sensors and the protocol
    (
        "sim_watts", None, "ini", "300", "positive_float", None, None, "",
        "sim sensor: constant power in watts",
    ),
    (
        "sim_noise", None, "ini", "0.01", "nonnegative_float", None, None, "",
        "sim sensor: relative noise of each window's joules",
    ),
    (
        "cpu_watts_per_core", None, "ini", "10", "positive_float", None, None, "",
        "cpu-estimate sensor: watts drawn per busy core",
    ),
    (
        "idle_power", None, "ini", "true", "bool", None, None, "",
        "measured sensors: measure the devices' idle power once at start, as context (false "
        "skips the ~1 s window)",
    ),
    (
        "max_delay", None, "ini", "0.1", "nonnegative_float", None, None, "",
        "largest random delay in seconds before each window (0 disables)",
    ),
    # marker-only: absolute budgets and the canary role
    (
        "min_tokens_per_joule", None, "marker", None, "positive_float", None, "number", "",
        "fail below this many tokens per joule",
    ),
    (
        "max_joules_per_token", None, "marker", None, "positive_float", None, "number", "",
        "fail above this many joules per token",
    ),
    (
        "max_watts", None, "marker", None, "positive_float", None, "number", "",
        "fail above this mean power in watts",
    ),
    (
        "min_tokens_per_second", None, "marker", None, "positive_float", None, "number", "",
        "fail below this many tokens per second",
    ),
    (
        "max_latency", None, "marker", None, "latency", None, "latency", "",
        "fail when a load measurement's latency is above a limit in seconds, e.g. "
        "{'tpot_p90': 0.05, 'ttft_p99': 1.0}: ttft (time to first token), tpot (time per "
        "output token) or e2e (end to end), at p50, p90 or p99",
    ),
    (
        "gpus", None, "marker", None, "int>=1", None, "int", "",
        "the number of GPUs the deployment spans (TP x PP...): a window that measured fewer "
        "fails, listing what it found",
    ),
    (
        "hosts", None, "marker", None, "hosts", None, "hosts", "",
        "the hosts the deployment spans: a window that measured no GPU of one of them fails",
    ),
    (
        "canary", None, "marker", "false", "bool", None, "bool", "",
        "a frozen reference workload whose drift measures the environment's",
    ),
)  # fmt: skip

#: How an ini file says yes or no to a switch (anything else is refused where it is parsed).
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")

#: The ways of writing baselines, as the ``mode=`` parsers name them.
BASELINE_MODES = ("replace", "extend", "missing")

#: The dashboard formats ``--tpw-export`` and ``pytest-tpw export`` write.
EXPORT_FORMATS = ("bencher", "github-action-benchmark")


def dest(flag: str) -> str:
    """A flag's name in pytest's options and in ini files: ``--tpw-x-y`` -> ``tpw_x_y``."""
    return flag[2:].replace("-", "_")


def ini_name(row: Row) -> str | None:
    """The ini key of a row: its flag's twin, ``tpw_<field>`` for an ini-only row, or None."""
    flag = row[FLAG]
    if flag is not None:
        return dest(flag)
    return "tpw_" + row[FIELD] if row[SCOPE] == "ini" else None


def marker_help() -> str:
    """The marker's line in ``pytest --markers``: its arguments in the table's order."""
    args = ", ".join(
        f"{r[FIELD]}={r[DEFAULT].title() if r[SCOPE] == 'marker' and r[DEFAULT] else None}"
        for r in OPTIONS
        if r[MARKER]
    )
    return f"tpw({args}): tokens-per-joule budgets and per-test controls for pytest-tpw"
