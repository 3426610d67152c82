"""A ``tpw.load(...)`` call, checked: where to send, what load, for how long.

Every argument is validated before a request is sent; a :class:`LoadError` names the
argument and what it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pytest_tpw.load.shape import LoadError, LoadShape

#: The steady part's length when neither ``duration_s`` nor ``requests`` is given.
DEFAULT_DURATION_S = 10.0


@dataclass(frozen=True)
class LoadPlan:
    """A validated ``tpw.load(...)`` call."""

    base_url: str
    shape: LoadShape
    duration_s: float | None
    requests: int | None
    timeout_s: float
    model: str | None
    api_key: str
    extra_body: Mapping[str, Any] | None


def base_url_of(server: object) -> str:
    """The OpenAI base URL of a server: a ``tpw_server`` handle or ``ServerProcess`` (their
    ``base_url``), or a URL (``http://host:port`` gets ``/v1``)."""
    url = server if isinstance(server, str) else getattr(server, "base_url", None)
    if not isinstance(url, str):
        raise LoadError(
            f"tpw.load: the server must be a URL such as 'http://127.0.0.1:8000/v1' or what "
            f"tpw_server returned, got {server!r}"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LoadError(f"tpw.load: {url!r} is not an http(s) URL of an OpenAI-compatible server")
    if parts.path in ("", "/"):
        url = url.rstrip("/") + "/v1"
    return url


def plan_load(
    server: object,
    *,
    concurrency: int | None,
    rate: float | None,
    duration_s: float | None,
    requests: int | None,
    prompts: Sequence[str] | None,
    max_tokens: int,
    endpoint: str,
    model: str | None,
    seed: int,
    timeout_s: float | None,
    extra_body: Mapping[str, Any] | None,
    api_key: str | None,
) -> LoadPlan:
    """Check every argument of ``tpw.load`` before anything is sent."""
    shape = LoadShape.make(
        concurrency=concurrency,
        rate=rate,
        prompts=prompts,
        max_tokens=max_tokens,
        endpoint=endpoint,
        seed=seed,
    )
    for label, value in (("duration_s", duration_s), ("timeout_s", timeout_s)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise LoadError(
                f"tpw.load: {label} must be a positive number of seconds, got {value!r}"
            )
    if requests is not None and (
        isinstance(requests, bool) or not isinstance(requests, int) or requests < 1
    ):
        raise LoadError(f"tpw.load: requests must be an integer >= 1, got {requests!r}")
    if duration_s is None and requests is None:
        duration_s = DEFAULT_DURATION_S
    if timeout_s is None:
        timeout_s = 60.0 + 3.0 * duration_s if duration_s is not None else 300.0
    elif duration_s is not None and timeout_s <= duration_s:
        raise LoadError(
            f"tpw.load: timeout_s={timeout_s:g} bounds the whole load window (ramp, steady "
            f"part, drain) and must exceed duration_s={duration_s:g}"
        )
    if model is not None and not (isinstance(model, str) and model):
        raise LoadError(f"tpw.load: model must be a non-empty string, got {model!r}")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise LoadError(f"tpw.load: extra_body must be a dict, got {extra_body!r}")
    return LoadPlan(
        base_url=base_url_of(server),
        shape=shape,
        duration_s=None if duration_s is None else float(duration_s),
        requests=requests,
        timeout_s=float(timeout_s),
        model=model,
        api_key=api_key or "pytest-tpw",
        extra_body=extra_body,
    )


__all__ = ["DEFAULT_DURATION_S", "LoadPlan", "base_url_of", "plan_load"]
