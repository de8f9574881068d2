"""The bus's patterns (the shared topic matcher) against a simple reference definition."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtkit import EventBus
from rtkit._core.topic import TopicPattern
from rtkit.errors import ValidationError
from rtkit.eventbus._events import check_event_name, compile_pattern


def matches(pattern: str, name: str) -> bool:
    """Whether the bus would deliver an event called ``name`` to a ``pattern`` subscriber."""
    return compile_pattern(pattern).matches(name)


def reference(pattern: str, name: str) -> bool:
    """The definition, written as directly as possible (exponential, fine for tests)."""
    if pattern == "*":
        return True

    @functools.cache
    def match(p: tuple[str, ...], n: tuple[str, ...]) -> bool:
        if not p:
            return not n
        head, rest = p[0], p[1:]
        if head == "#":
            return match(rest, n) or (bool(n) and match(p, n[1:]))
        return bool(n) and (head in ("*", n[0])) and match(rest, n[1:])

    return match(tuple(pattern.split(".")), tuple(name.split(".")))


WORDS = st.sampled_from(["a", "b", "order", "created", "x:y"])
names = st.lists(WORDS, min_size=1, max_size=6).map(".".join)
patterns = st.one_of(
    st.just("*"),
    st.lists(st.one_of(WORDS, st.just("*"), st.just("#")), min_size=1, max_size=6).map(".".join),
)


@settings(max_examples=2000, deadline=None)
@given(pattern=patterns, name=names)
def test_matcher_agrees_with_the_reference(pattern: str, name: str) -> None:
    assert matches(pattern, name) == reference(pattern, name)


@settings(max_examples=300, deadline=None)
@given(name=names)
def test_a_name_matches_itself_and_the_wildcards(name: str) -> None:
    assert matches(name, name)
    assert matches("*", name)
    assert matches("#", name)
    assert check_event_name(name) == name


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("order.*", "order.created", True),
        ("order.*", "order", False),
        ("order.*", "order.item.added", False),
        ("order.#", "order", True),
        ("order.#", "order.item.added", True),
        ("#.added", "added", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y", False),
        ("*", "anything.at.all", True),
        ("*.*", "a", False),
        ("chat:message", "chat:message", True),
    ],
)
def test_examples(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_many_hashes_do_not_backtrack() -> None:
    pattern = ".".join(["#", "a"] * 60)
    name = ".".join(["a"] * 120 + ["b"])
    assert not matches(pattern, name)


@pytest.mark.parametrize("bad", ["", ".", "a.", "a**", "a.b#", "a b", "a\tb", 3])
def test_invalid_patterns(bad: object) -> None:
    with pytest.raises(ValidationError):
        compile_pattern(bad)


def test_the_bus_uses_the_shared_topic_matcher() -> None:
    assert compile_pattern("order.*") == TopicPattern("order.*")
    assert compile_pattern("*") == TopicPattern("#")  # a lone "*" is every event
    assert compile_pattern("a.*") == TopicPattern("a.*")  # elsewhere "*" is one segment


def test_a_lone_star_subscription_keeps_its_text() -> None:
    bus = EventBus()
    bus.subscribe("*", lambda event: None)
    assert bus.stats().listeners == {"*": 1}
