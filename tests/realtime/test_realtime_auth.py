"""JWT tokens: issued, verified, refused with a clear reason."""

from __future__ import annotations

import jwt
import pytest

from rtkit.errors import AuthError, ConfigurationError, TokenExpired, ValidationError
from rtkit.realtime import Identity, JWTVerifier, TokenVerifier, issue_token

SECRET = "s" * 64


async def test_a_token_names_its_user() -> None:
    verifier = JWTVerifier(SECRET)
    assert isinstance(verifier, TokenVerifier)
    assert await verifier.verify(issue_token(SECRET, "42", name="Ada")) == Identity("42", "Ada")
    assert await verifier.verify(issue_token(SECRET, "43")) == Identity("43", "43")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "no authentication token"),
        ("not-a-jwt", "invalid"),
        (issue_token("o" * 40, "42"), "invalid"),
        (issue_token(SECRET, "42", ttl=-60), "expired"),
        (jwt.encode({"sub": "42"}, SECRET, algorithm="HS256"), "invalid"),  # no exp
        (jwt.encode({"exp": 9_999_999_999}, SECRET, algorithm="HS256"), "invalid"),  # no sub
        (jwt.encode({"sub": "", "exp": 9_999_999_999}, SECRET, algorithm="HS256"), "invalid"),
        (jwt.encode({"sub": "42", "exp": 9_999_999_999}, SECRET, algorithm="HS512"), "invalid"),
        ("x" * 10_000, "too long"),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        await JWTVerifier(SECRET).verify(token)


async def test_an_expired_token_is_its_own_error_class() -> None:
    with pytest.raises(TokenExpired, match="expired") as expired:
        await JWTVerifier(SECRET).verify(issue_token(SECRET, "42", ttl=-60))
    assert expired.value.code == "token_expired"
    assert isinstance(expired.value, AuthError)


def test_secrets_must_be_long_enough() -> None:
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        JWTVerifier("short")
    with pytest.raises(ConfigurationError):
        issue_token("short", "42")


def test_user_ids_are_validated() -> None:
    with pytest.raises(ValidationError):
        issue_token(SECRET, "")
    with pytest.raises(ValidationError):
        issue_token(SECRET, "42", name="bad\nname")
