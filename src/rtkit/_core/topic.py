"""The one topic matcher: AMQP topic patterns in linear time.

A pattern is dot-separated words: a literal word matches itself, ``*`` exactly
one word and ``#`` zero or more words. The EventBus and the in-memory broker
both match with :class:`TopicPattern`, so they cannot disagree.

Matching simulates the pattern as a small automaton: one pass over the key's
words, carrying the set of pattern positions reached so far, so a match costs
``O(len(pattern) * len(key))`` whatever the pattern (no backtracking).
"""

from __future__ import annotations

import functools

__all__ = ["TopicPattern", "topic_matches"]


class TopicPattern:
    """A compiled AMQP topic pattern (``order.*``, ``order.#``, ``#.error``)."""

    __slots__ = ("_literal", "_words", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        words = text.split(".")
        self._literal = "*" not in words and "#" not in words
        compact: list[str] = []
        for word in words:  # a run of "#" matches what one "#" matches
            if not (word == "#" and compact and compact[-1] == "#"):
                compact.append(word)
        self._words = tuple(compact)

    def __repr__(self) -> str:
        return f"TopicPattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicPattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def matches(self, key: str) -> bool:
        """Whether the routing key (or event name) ``key`` matches."""
        if self._literal:
            return key == self.text
        words = self._words
        end = len(words)
        states = self._closure({0})
        for word in key.split("."):
            advanced: set[int] = set()
            for i in states:
                if i < end:
                    w = words[i]
                    if w == "#":
                        advanced.add(i)
                    elif w == "*" or w == word:
                        advanced.add(i + 1)
            if not advanced:
                return False
            states = self._closure(advanced)
        return end in states

    def _closure(self, states: set[int]) -> set[int]:
        """Add the positions reachable by letting a ``#`` match nothing."""
        words = self._words
        for i in list(states):
            j = i
            while j < len(words) and words[j] == "#":
                j += 1
                states.add(j)
        return states


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> TopicPattern:
    return TopicPattern(pattern)


def topic_matches(pattern: str, key: str) -> bool:
    """Whether ``key`` matches the AMQP topic ``pattern`` (compiled patterns are cached)."""
    return _compiled(pattern).matches(key)
