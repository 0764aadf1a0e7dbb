"""Keeping stories fit for children: a topic filter and an output filter, both driven by
one word list (etc/blocklist.txt).

Entries are words or phrases, matched case-insensitively as whole words; a word also
matches its plain plurals (gun: guns; bush: bushes; story: stories); a trailing * matches
any ending (kill*: kills, killed, killer). Lines starting with # are comments.

- check_topic() refuses a topic containing a listed word, politely, offering another one.
- Blocklist.find() tells the story layer that a generated sentence must not be shown;
  story.py then generates it again or drops it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path

from storyteller.errors import ConfigError, TopicRefusedError

# Topics offered instead of a refused one (each safe and a good TinyStories opening).
SAFE_TOPICS = (
    "a brave little dragon", "a kind robot", "a trip to the moon", "a lost teddy bear",
    "a friendly dinosaur", "a magic garden", "a little boat at sea", "a cat who loved to sing",
    "a puppy and a ball", "a picnic in the park",
)


def _pattern(entry: str) -> str:
    """The regex of one list entry (without the word boundaries)."""
    prefix = entry.endswith("*")
    words = entry.rstrip("*").split()
    body = r"\s+".join(re.escape(w) for w in words)
    if prefix:
        return body + r"\w*"
    last = words[-1]
    if re.fullmatch(r".*[^aeiou]y", last):  # story -> stories
        return body + r"s?|" + r"\s+".join([*map(re.escape, words[:-1]), re.escape(last[:-1]) + "ies"])
    return body + r"(?:s|es)?"


class Blocklist:
    """A compiled word list."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(e.strip().lower() for e in entries if e.strip() and e.strip() != "*")
        if self.entries:
            alternatives = "|".join(_pattern(e) for e in sorted(self.entries, key=len, reverse=True))
            self._regex: re.Pattern[str] | None = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I)
        else:
            self._regex = None

    @classmethod
    def load(cls, path: str | Path) -> Blocklist:
        """Reads a word list file (one entry a line, # comments)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the word list {path}: {e.strerror}") from None
        return cls(line.split("#", 1)[0] for line in text.splitlines())

    def find(self, text: str) -> str | None:
        """The first listed word in `text` (as written there), or None when it is clean."""
        if self._regex is None:
            return None
        m = self._regex.search(text)
        return m.group(0) if m else None


def check_topic(topic: str, blocklist: Blocklist, rng: random.Random | None = None) -> None:
    """Raises TopicRefusedError, with a kind refusal and another topic to offer, when the
    topic contains a listed word."""
    if blocklist.find(topic) is None:
        return
    alternative = (rng or random.Random()).choice(SAFE_TOPICS)
    raise TopicRefusedError(
        f"I'm sorry, I can't tell a story about that. How about a story about {alternative} instead?",
        alternative)
