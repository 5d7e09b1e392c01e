"""Polling with a deadline: the only way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """`wait_until` ran out of time. An AssertionError so pytest reports it as a failure."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    description: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` every `interval` seconds until it returns a truthy value.

    Returns that value. Raises `WaitTimeout` if `timeout` seconds pass first; the
    message names `description` (or the predicate), the number of attempts, the
    last value and the last ignored exception. Exceptions of the types in
    `ignore` count as "not yet"; any other exception propagates immediately.
    The predicate is always tried at least once, and once more at the deadline.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError("timeout must be >= 0 and interval > 0")
    what = description or getattr(predicate, "__qualname__", repr(predicate))
    deadline = time.monotonic() + timeout
    attempts = 0
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        attempts += 1
        try:
            value = predicate()
        except ignore as e:
            last_error = e
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    message = (
        f"timed out after {timeout:g}s waiting for {what} "
        f"({attempts} attempts; last value {last_value!r}"
    )
    if last_error is not None:
        message += f"; last error {type(last_error).__name__}: {last_error}"
    raise WaitTimeout(message + ")") from last_error
