"""A run's own sigma_b that changed tests cannot inflate (kernels.run_sigma_b with trim_z), and
the side of a step in the run shift that a test beside it takes (shift._right_of_step)."""

from __future__ import annotations

import numpy as np

from pytest_tpw.judging.decide import judge_suite
from pytest_tpw.judging.kernels import run_sigma_b
from pytest_tpw.judging.model import SuiteParams
from pytest_tpw.judging.prior import suite_prior
from pytest_tpw.judging.shift import _drifts_in_order, _right_of_step
from pytest_tpw.stats import Verdict


def _changes(seed: int, n: int = 300, sigma_b: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    var_wo = rng.uniform(0.002, 0.006, n) ** 2
    resid = rng.normal(0.0, np.sqrt(var_wo + (1 + 1 / 3) * sigma_b**2))
    return resid, var_wo


def test_trimmed_run_sigma_b_is_not_inflated_by_the_changed_tests() -> None:
    plain, trimmed = [], []
    for seed in range(20):
        resid, var_wo = _changes(seed)
        resid[::10] += np.log(0.95)  # 10 % of the tests changed by -5 %
        n_sessions = np.full(resid.size, 3.0)
        plain.append(run_sigma_b(resid, var_wo, n_sessions))
        trimmed.append(run_sigma_b(resid, var_wo, n_sessions, trim_z=2.5))
    assert np.median(plain) > 0.0055  # the changed tests push the plain median up
    assert abs(np.median(trimmed) - 0.005) < 0.0004
    assert np.median(trimmed) < np.median(plain)


def test_trimming_a_clean_run_changes_little() -> None:
    for seed in range(5):
        resid, var_wo = _changes(100 + seed)
        n_sessions = np.full(resid.size, 3.0)
        plain = run_sigma_b(resid, var_wo, n_sessions)
        trimmed = run_sigma_b(resid, var_wo, n_sessions, trim_z=2.5)
        assert abs(trimmed - plain) < 0.1 * plain


def _step_span(seed: int, step_at: int, n: int = 59) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, n)  # loadings
    var = np.full(n, 0.006**2)
    delta = x * np.where(np.arange(n) < step_at, 0.01, -0.02) + rng.normal(0.0, 0.006, n)
    return delta, var, x


def test_a_test_far_from_the_step_takes_its_own_side() -> None:
    delta, var, x = _step_span(1, step_at=30)
    assert _right_of_step(delta, var, x, 10) < 0.01
    assert _right_of_step(delta, var, x, 50) > 0.99


def test_a_changed_test_cannot_choose_its_side_by_its_own_change() -> None:
    """A test 8 places before a downward step, itself changed by -5 %: its neighbours put it
    before the step (where the shift is higher), whatever its own value says."""
    delta, var, x = _step_span(2, step_at=30)
    i = 22
    delta[i] = x[i] * 0.01 + np.log(0.95)  # nearer the shift after the step than before it
    assert _right_of_step(delta, var, x, i) < 0.01


def test_right_at_the_step_the_side_is_left_open() -> None:
    delta, var, x = _step_span(3, step_at=30)
    p = _right_of_step(delta, var, x, 30)  # the first test after it: no neighbour can tell
    assert 0.01 < p < 0.99


def test_a_block_of_tests_in_another_state_is_found_in_run_order() -> None:
    """The last 30 % of a run in a state 3 % lower: around the majority's shift they are
    outliers that a median-based spread barely sees, but in run order they are one block."""
    rng = np.random.default_rng(4)
    n = 300
    var = np.full(n, 0.007**2)
    found = 0
    for _ in range(20):
        resid = rng.normal(0.0, 0.007, n)
        resid[210:] += rng.uniform(0.3, 1.7, n - 210) * np.log(0.97)
        found += _drifts_in_order(resid, var)
    assert found == 20
    # runs without a block: no drift
    calm = sum(_drifts_in_order(rng.normal(0.0, 0.007, n), var) for _ in range(200))
    assert calm <= 3  # at the 0.1 % level, 200 calm runs give at most a few


def test_a_late_flip_does_not_fail_the_tests_that_ran_in_it() -> None:
    from tests.unit.judging.test_loadings import _clock_suite

    # without the drift check these runs failed 17, 24 and 21 tests (the flip's tests were
    # outliers around the majority's shift, and their spread not wide enough to widen)
    for seed, flip_at in ((30, 240), (31, 220), (35, 240)):
        tests, _ = _clock_suite(seed, flip_at=flip_at)
        prior = suite_prior({t.key: t.baseline for t in tests}, SuiteParams())
        decision = judge_suite(tests, prior, SuiteParams())
        failed = [k for k, c in decision.comparisons.items() if c.verdict is Verdict.REGRESSED]
        assert not failed, (seed, flip_at, failed)
