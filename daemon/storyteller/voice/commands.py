"""The spoken commands: the word lists of etc/commands.txt and etc/topics.txt, the grammars
the recognizers are restricted to (a JSGF grammar for PocketSphinx, a phrase list for Vosk),
and what a recognized text means.

A recognizer restricted to these phrases can only hear a command and one listed topic, so
what a child says becomes one of a few fixed values, never free text, a path or a command
line. Without the grammar PocketSphinx mishears ("til the story about a dragon").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ARTICLES = ("a", "an", "the", "my")
COMMAND_NAMES = ("story", "another", "stop", "louder", "quieter")


class GrammarError(ValueError):
    """A word list that cannot make a grammar (an unknown command, a word out of the dictionary)."""


@dataclass(frozen=True)
class Command:
    """What was said: `name` is one of COMMAND_NAMES; `topic` the listed topic (story only)."""

    name: str
    topic: str | None = None


def _lines(path: Path) -> list[str]:
    return [s for line in path.read_text(encoding="utf-8").splitlines() if (s := line.strip().lower())
            and not s.startswith("#")]


@dataclass(frozen=True)
class Grammar:
    phrases: dict[str, str]  # command name -> its phrase
    topics: tuple[str, ...]

    @classmethod
    def load(cls, commands: Path, topics: Path) -> Grammar:
        phrases: dict[str, str] = {}
        for line in _lines(commands):
            name, sep, phrase = line.partition(":")
            if not sep or name.strip() not in COMMAND_NAMES or not phrase.split():
                raise GrammarError(f"{commands}: {line!r} is not 'NAME: phrase' with NAME one of "
                                   f"{', '.join(COMMAND_NAMES)}")
            phrases[name.strip()] = " ".join(phrase.split())
        missing = set(COMMAND_NAMES) - set(phrases)
        if missing:
            raise GrammarError(f"{commands} has no phrase for {', '.join(sorted(missing))}")
        words = _lines(topics)
        bad = [t for t in words if not re.fullmatch(r"[a-z]+(?: [a-z]+)*", t)]
        if bad or not words:
            raise GrammarError(f"{topics}: topics are lowercase words (got {bad[:3] or 'none'})")
        return cls(phrases, tuple(words))

    def words(self) -> list[str]:
        """Every word the grammar can produce, sorted (what the dictionary must hold)."""
        found = {"about", *ARTICLES}
        for text in (*self.phrases.values(), *self.topics):
            found.update(text.split())
        return sorted(found)

    def jsgf(self) -> str:
        """A JSGF grammar for PocketSphinx."""
        others = " | ".join(self.phrases[n] for n in COMMAND_NAMES if n != "story")
        return ("#JSGF V1.0;\ngrammar storyteller;\n"
                f"public <command> = <story> | {others};\n"
                f"<story> = {self.phrases['story']} [about [{' | '.join(ARTICLES)}] <topic>];\n"
                f"<topic> = {' | '.join(self.topics)};\n")

    def vosk_phrases(self) -> str:
        """Vosk's grammar: a JSON list of every phrase, "[unk]" for anything else."""
        phrases = [self.phrases[n] for n in COMMAND_NAMES]
        phrases += [f"{self.phrases['story']} about {a} {t}".replace("  ", " ") for t in self.topics
                    for a in ("", *ARTICLES)]
        return json.dumps([*phrases, "[unk]"])

    def parse(self, text: str) -> Command | None:
        """The command in a recognized text (None: nothing, or not a command)."""
        words = text.lower().split()
        said = " ".join(w for w in words if w != "[unk]")
        story = self.phrases["story"]
        if said.startswith(story):
            rest = said[len(story):].split()
            if rest[:1] == ["about"]:
                rest = rest[1:]
            if rest[:1] and rest[0] in ARTICLES:
                rest = rest[1:]
            topic = " ".join(rest)
            return Command("story", topic if topic in self.topics else None)
        for name in COMMAND_NAMES:
            if name != "story" and said == self.phrases[name]:
                return Command(name)
        return None


def dictionary(words: list[str], full_dictionary: Path) -> str:
    """The lines of a CMU pronouncing dictionary for exactly `words` (variants included):
    a 20-word dictionary instead of 134,000 keeps PocketSphinx small and fast."""
    wanted = set(words)
    lines = []
    with open(full_dictionary, encoding="utf-8") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if head.split("(", 1)[0] in wanted:
                lines.append(line.rstrip("\n"))
    found = {line.split(" ", 1)[0].split("(", 1)[0] for line in lines}
    missing = wanted - found
    if missing:
        raise GrammarError(f"not in the dictionary {full_dictionary}: {', '.join(sorted(missing))}")
    return "\n".join(lines) + "\n"
