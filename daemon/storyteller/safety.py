"""Keeping stories fit for children: one text gate in front of the screen and the speaker,
and one word list (etc/blocklist.txt) behind it.

What is promised (tests/python/test_safety.py holds each promise to a test):

- clean(text) is what may be printed and spoken of a text, and the word list looks at
  exactly that. It is
    1. Unicode NFKC (fullwidth "ｇｕｎ", mathematical "𝐠𝐮𝐧", circled, superscript letters and
       ligatures become the ASCII letters they are drawn as);
    2. without format characters (soft hyphens, zero-width spaces and joiners, bidi
       controls, tag characters: a word they split is one word again), combining marks
       (after canonical decomposition: "kïll" is "kill", "café" is "cafe"), private-use,
       unassigned and surrogate code points; line breaks and tabs become spaces;
    3. with every remaining letter that looks like an ASCII letter replaced by it
       (confusable skeletons after Unicode TR#39: Cyrillic "а кnife", Greek, Cherokee,
       Latin small capitals; the table is storyteller._confusables, generated from
       Unicode's confusables.txt by scripts/make-confusables);
    4. ASCII and the typographic quotes and dashes ‘ ’ “ ” – — only: anything else (letters
       of other scripts, emoji, which espeak-ng reads out by name, other symbols) is dropped,
       and so are control characters (as spaces: "\\x01" starts an espeak-ng command);
    5. without espeak-ng markup: "[" and "]" (espeak-ng's command reads "[[...]]" as
       phonemes, always) and "{", "}", "<", ">" (SSML, which storyteller never turns on)
       become "(" and ")"; "\\", "^", "_", "`", "|", "~" become spaces;
    6. with runs of spaces made one, and no space at either end.
  clean() of a clean text is the same text.
- The word list matches whole words, case-insensitively, in clean text, and also when a
  word is spelled with look-alike ASCII ("k1ll", "h3ll", "a$$", "sh!t", "kiII"), with letters
  starred out ("f**k"), split by "-" or "." ("gu-n"), or spelled out letter by letter
  ("k n i f e", "g.u.n"). A word also matches its plain plurals (gun: guns; bush: bushes;
  story: stories); a trailing * matches any ending (kill*: kills, killed, killer).
  Entries after a line "[topics]" refuse topics only ("knife", "hurt": a story may mention
  a knife, but is not about one).
- gate(text) is one sentence as it may be told, or why it may not: a listed word, or
  characters that had to be dropped (the sentence would be told with holes in it).
- check_topic() refuses, kindly and offering another topic, a topic that contains a listed
  word (either list) or anything a topic has no need of: dropped characters, markup
  characters (before clean() neutralises them), or other than letters, digits, spaces and
  ' - , . ! ? &. It returns the clean topic.

What is not promised: meaning. "a sharp thing to cut people" passes; the word list is the
judge of ideas, and it knows words, not paraphrases. Nor spellings beyond those above
("k'ill", "kniiife").
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storyteller._confusables import ASCII as _LOOKALIKES
from storyteller.errors import ConfigError, TopicRefusedError

# Topics offered instead of a refused one (each safe and a good TinyStories opening).
SAFE_TOPICS = (
    "a brave little dragon", "a kind robot", "a trip to the moon", "a lost teddy bear",
    "a friendly dinosaur", "a magic garden", "a little boat at sea", "a cat who loved to sing",
    "a puppy and a ball", "a picnic in the park",
)
REFUSAL = "I'm sorry, I can't tell a story about that. How about a story about {} instead?"

# ----------------------------------------------------------------------------- the text gate

TYPOGRAPHIC = frozenset("‘’“”–—")  # kept: TinyStories models write them
_ASCII_MAP = {"[": "(", "]": ")", "{": "(", "}": ")", "<": "(", ">": ")",
              "\\": " ", "^": " ", "_": " ", "`": " ", "|": " ", "~": " "}
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9 '’\-,.!?&]*")


def _fold(text: str) -> tuple[str, str]:
    """clean(text), and the visible characters it had to drop (steps in the module docstring)."""
    out: list[str] = []
    dropped: list[str] = []
    for ch in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text)):
        if ch.isascii():
            if ch.isprintable():
                out.append(_ASCII_MAP.get(ch, ch))
            else:
                out.append(" ")
                if not ch.isspace():
                    dropped.append(ch)  # a control character: espeak-ng's \x01 commands, DEL, ESC
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "M" or cat == "Cf":
            continue  # combining marks, format characters: nothing to see, so nothing
        if cat[0] == "Z" or cat == "Cc":
            out.append(" ")
            if cat == "Cc" and not ch.isspace():
                dropped.append(ch)
        elif ch in TYPOGRAPHIC:
            out.append(ch)
        elif ch in _LOOKALIKES:
            out.append(_LOOKALIKES[ch])
        else:
            dropped.append(ch)
    return " ".join("".join(out).split()), "".join(dropped)


def clean(text: str) -> str:
    """What may be printed and spoken of `text` (the module docstring says what that is)."""
    return _fold(text)[0]


# ----------------------------------------------------------------------------- the word list

# ASCII look-alikes of the letters of listed words ("k1ll", "$h!t", "b0mb"), and of the
# letters after the first a star may stand for ("f**k").
_ALIKE = {"a": "a4@", "b": "b8", "e": "e3", "g": "g9", "i": "i1!l", "l": "l1i", "o": "o0", "s": "s5$", "t": "t7+"}
_ALIKE_PAIRS = {"m": "rn", "w": "vv"}
_JOIN = r"[-.]?"  # "gu-n", "k.nife"
_SPELL = r"[\s.,*-]+"  # "k n i f e", "g.u.n", "k-n-i-f-e"


def _letter(c: str, starred: bool) -> str:
    """The regex of one letter of an entry."""
    if not c.isalpha():
        return re.escape(c)
    chars = re.escape(_ALIKE.get(c, c) + ("*" if starred else ""))
    pair = _ALIKE_PAIRS.get(c)
    return f"(?:[{chars}]|{pair})" if pair else f"[{chars}]"


def _word(word: str) -> str:
    return _JOIN.join(_letter(c, i > 0) for i, c in enumerate(word))


def _pattern(entry: str) -> str:
    """The regex of one list entry (without the word boundaries)."""
    prefix = entry.endswith("*")
    words = entry.rstrip("*").split()
    body = r"\s+".join(_word(w) for w in words)
    if prefix:
        forms = [body + r"\w*"]
    elif re.fullmatch(r".*[^aeiou]y", words[-1]):  # story -> stories
        forms = [body + "s?", r"\s+".join([*map(_word, words[:-1]), _word(words[-1][:-1] + "ies")])]
    else:
        forms = [body + "(?:e?s)?"]
    if len(words) == 1 and len(words[0]) > 1 and words[0].isalpha():  # spelled out, letter by letter
        spelled = _SPELL.join(f"[{re.escape(_ALIKE.get(c, c))}]" for c in words[0])
        forms.append(spelled + (rf"(?:{_SPELL}[a-z])*" if prefix else rf"(?:{_SPELL}s)?"))
    return "|".join(forms)


def _compile(entries: tuple[str, ...]) -> re.Pattern[str] | None:
    if not entries:
        return None
    alternatives = "|".join(_pattern(e) for e in sorted(entries, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I)


def _entries(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.strip().lower() for e in lines if e.strip() and e.strip() != "*")


class Blocklist:
    """A compiled word list: `entries` keep stories clean, `topic_entries` refuse topics
    only (etc/blocklist.txt's "[topics]" section)."""

    def __init__(self, entries: Iterable[str], topic_entries: Iterable[str] = ()) -> None:
        self.entries = _entries(entries)
        self.topic_entries = _entries(topic_entries)
        self._regex = _compile(self.entries)
        self._topic_regex = _compile(self.entries + self.topic_entries)

    @classmethod
    def load(cls, path: str | Path) -> Blocklist:
        """Reads a word list file (one entry a line, # comments; entries after a line
        "[topics]" refuse topics only)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the word list {path}: {e.strerror}") from None
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        if "[topics]" in lines:
            at = lines.index("[topics]")
            return cls(lines[:at], lines[at + 1:])
        return cls(lines)

    def find(self, text: str, topic: bool = False) -> str | None:
        """The first listed word in clean(text), as written there, or None when it is clean.
        topic: the topic-only entries count too."""
        return self._search(clean(text), topic)

    def _search(self, cleaned: str, topic: bool) -> str | None:
        regex = self._topic_regex if topic else self._regex
        m = regex.search(cleaned) if regex is not None else None
        return m.group(0) if m else None


# ----------------------------------------------------------------------------- sentences, topics


@dataclass(frozen=True)
class Gated:
    """A text after the gate: `text` is what may be printed and spoken; it may not be told
    when it contains a listed word (`blocked`) or had visible characters dropped
    (`dropped`: letters of other scripts, emoji, symbols), or has nothing left to say."""

    text: str
    blocked: str | None
    dropped: str

    @property
    def ok(self) -> bool:
        return self.blocked is None and not self.dropped and any(c.isalnum() for c in self.text)


def gate(text: str, blocklist: Blocklist, topic: bool = False) -> Gated:
    """The one gate every printed and spoken text passes: clean() and the word list (with
    its topic-only entries when `topic`)."""
    cleaned, dropped = _fold(text)
    return Gated(cleaned, blocklist._search(cleaned, topic), dropped)


def refuse(rng: random.Random | None = None) -> TopicRefusedError:
    """The kind refusal, with another topic to offer."""
    alternative = (rng or random.Random()).choice(SAFE_TOPICS)
    return TopicRefusedError(REFUSAL.format(alternative), alternative)


def check_topic(topic: str, blocklist: Blocklist, rng: random.Random | None = None) -> str:
    """The clean topic; raises TopicRefusedError, with a kind refusal and another topic to
    offer, when the topic contains a listed word (topic-only entries included), characters
    the gate drops, markup characters ([ ] { } < > \\ ^ _ ` | ~), or characters other than
    letters, digits, spaces and ' - , . ! ? &."""
    g = gate(topic, blocklist, topic=True)
    markup = any(c in _ASCII_MAP for c in unicodedata.normalize("NFKC", topic))
    if g.blocked is not None or g.dropped or markup or not _TOPIC_CHARS.fullmatch(g.text):
        raise refuse(rng)
    return g.text
