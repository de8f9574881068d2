"""Writing limits, and reading decisions."""

from __future__ import annotations

import pytest

from rtkit import Decision, Limit
from rtkit.errors import ConfigurationError
from rtkit.ratelimit import parse_limit


@pytest.mark.parametrize(
    ("text", "amount", "period"),
    [
        ("100/minute", 100, 60.0),
        ("10/second", 10, 1.0),
        ("5/10 seconds", 5, 10.0),
        ("1000/hour", 1000, 3600.0),
        ("1/day", 1, 86400.0),
        ("3 per 2 min", 3, 120.0),
        ("7/0.5s", 7, 0.5),
        (" 20 / Hours ", 20, 3600.0),
    ],
)
def test_limits_parse_from_text(text: str, amount: int, period: float) -> None:
    assert Limit.parse(text) == Limit(amount, period)
    assert parse_limit(text, algorithm="sliding_window").algorithm == "sliding_window"


@pytest.mark.parametrize(
    "text", ["", "100", "/minute", "100/fortnight", "-1/second", "0/second", "1/0 seconds", "x/s"]
)
def test_bad_limit_text_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        Limit.parse(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": 0, "period": 1},
        {"amount": 1.5, "period": 1},
        {"amount": True, "period": 1},
        {"amount": 1, "period": 0},
        {"amount": 1, "period": float("nan")},
        {"amount": 1, "period": "60"},
        {"amount": 1, "period": 1, "algorithm": "leaky"},
        {"amount": 1, "period": 1, "burst": 0},
        {"amount": 1, "period": 1, "algorithm": "sliding_window", "burst": 3},
        {"amount": 1_000_000, "period": 1, "algorithm": "sliding_window"},
        {"amount": 1, "period": 1e9},
    ],
)
def test_bad_limits_are_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Limit(**kwargs)  # type: ignore[arg-type]


def test_gcra_burst_defaults_to_amount() -> None:
    assert Limit(10, 60).capacity == 10
    assert Limit(10, 60, burst=25).capacity == 25
    assert str(Limit(10, 60, burst=25)) == "10/60 seconds (gcra, burst 25)"
    assert str(Limit(3, 1, "sliding_window")) == "3/second (sliding_window)"


def test_decision_headers() -> None:
    allowed = Decision(True, 100, 42, 12.2, 0.0)
    assert allowed.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "42",
        "RateLimit-Reset": "13",
    }
    denied = Decision(False, 100, 0, 30.0, 0.3)
    assert denied.headers()["Retry-After"] == "1"
