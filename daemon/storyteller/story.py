"""Stories for children from a TinyStories model.

These models continue text; they do not follow instructions. So a topic ("a brave little
dragon", "my cat Tom", "space") becomes the opening of a story through one of three
templates (a character, a place, anything else), with a name (the topic's own, "my cat
Tom" -> Tom, or one picked for it), and the model goes on from there.

A story ends at the model's end (BOS, EOS), at "The end.", or at the sentence budget,
and only complete sentences are told. Nothing here knows about audio.

What is told passes storyteller.safety's gate, all of it: the topic (accept_topic), the
opening built from it, every generated sentence, and the whitespace between them. Every
Sentence that tell() yields is gated text: safety.clean() of what the model wrote, with no
listed word in it. A topic is refused (TopicRefusedError) when it, or the opening made from
it, does not pass; a generated sentence that does not (a listed word, or characters the gate
had to drop) is generated again from the accepted text with another seed (up to `retries`
times), or the story ends without it.
"""

from __future__ import annotations

import random
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from storyteller.config import GenerationSettings, StorySettings
from storyteller.engine import Session
from storyteller.errors import ArgumentError, ContextFullError, TopicError
from storyteller.safety import Blocklist, check_topic, clean, gate, refuse
from storyteller.sentences import Sentence, split_stream, split_text


@dataclass(frozen=True)
class StoryOptions:
    """How stories are told (etc/storyteller.toml [generation] and [story])."""

    max_sentences: int = 15  # the sentence budget, opening included
    temperature: float = 0.8
    top_p: float = 0.9
    seed: int | None = None  # None or 0: a new story every time
    retries: int = 3  # new attempts at a sentence the filter blocked
    max_topic_chars: int = 80
    closing: str = "The end."  # told when a story stops without an ending; "" for none

    @classmethod
    def from_settings(cls, story: StorySettings, generation: GenerationSettings, **overrides: object) -> StoryOptions:
        """The options of the settings file's [story] and [generation] (the same field names),
        with the overrides that are not None (command-line options)."""
        values = {**asdict(story), **asdict(generation)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        """Checked here, before a story starts: a bad value is an ArgumentError naming it
        (rather than a failure after the opening is told)."""
        for name, ok, want in (
                ("max_sentences", self.max_sentences >= 1, "1 or more"),
                ("temperature", 0.0 <= self.temperature <= sys.float_info.max, "0 or more"),
                ("top_p", 0.0 <= self.top_p <= 1.0, "between 0 and 1"),
                ("retries", self.retries >= 0, "0 or more"),
                ("max_topic_chars", self.max_topic_chars >= 1, "1 or more")):
            if not ok:
                raise ArgumentError(f"{name} must be {want} (got {getattr(self, name)!r})")


# ----------------------------------------------------------------------------- topic -> opening

NAMES = {"girl": ("Lily", "Mia", "Sue", "Anna", "Lucy", "Zoe", "Amy", "Emma"),
         "boy": ("Tom", "Ben", "Max", "Sam", "Tim", "Jack", "Leo", "Joe")}
PET_NAMES = ("Spot", "Sparky", "Fluffy", "Bubbles", "Pip", "Sunny", "Coco", "Buttons", "Ziggy", "Daisy")

# Words that make a topic a character: people (named like a girl or a boy, or either), and
# the rest (named like a pet).
GIRLS = frozenset("girl princess queen mermaid fairy witch mom mommy grandma sister lady".split())
BOYS = frozenset("boy prince king knight wizard dad daddy grandpa brother".split())
PEOPLE = GIRLS | BOYS | frozenset("""pirate astronaut friend baby teacher doctor farmer
firefighter chef clown giant elf""".split())
CHARACTERS = PEOPLE | frozenset("""cat kitten kitty dog puppy dragon bunny rabbit bear teddy fox owl bird
fish frog mouse lion tiger elephant monkey horse pony unicorn robot dinosaur duck pig cow sheep
goat turtle penguin whale dolphin bee butterfly ant snail squirrel giraffe zebra wolf ladybug
hen chicken octopus crab shark seal hippo kangaroo koala panda snowman car train truck boat
plane rocket tree flower balloon star cloud sun ghost monster toy doll ball""".split())

# Places: (preposition, the article a bare noun takes).
PLACES: dict[str, tuple[str, str]] = {
    "space": ("in", ""), "forest": ("in", "the"), "woods": ("in", "the"), "sea": ("under", "the"),
    "ocean": ("in", "the"), "beach": ("at", "the"), "park": ("at", "the"), "jungle": ("in", "the"),
    "castle": ("in", "a"), "moon": ("on", "the"), "school": ("at", ""), "farm": ("on", "a"),
    "garden": ("in", "the"), "city": ("in", "the"), "mountain": ("on", "a"),
    "mountains": ("in", "the"), "zoo": ("at", "the"), "snow": ("in", "the"),
    "desert": ("in", "the"), "island": ("on", "an"), "lake": ("by", "the"), "river": ("by", "the"),
    "sky": ("in", "the"), "playground": ("at", "the"), "library": ("at", "the"),
    "kitchen": ("in", "the"), "cave": ("in", "a"), "pond": ("by", "the"), "village": ("in", "a"),
    "town": ("in", "a"), "circus": ("at", "the"), "museum": ("at", "the"), "rain": ("in", "the"),
}
DETERMINERS = frozenset("a an the my our your his her their some".split())
_LEAD_IN = re.compile(
    r"^(?:(?:please\s+)?(?:tell|read|make|give)\s+(?:me|us)\s+)?(?:a\s+)?(?:story|tale)\s+(?:about|of|with)(?:\s+|$)"
    r"|^about(?:\s+|$)", re.I)
_NAMED = re.compile(r"\s+(?:named|called)\s+(\w+)\s*$", re.I)


@dataclass(frozen=True)
class Topic:
    """A parsed topic: its words without the name, the name if it had one, its kind."""

    phrase: str  # e.g. "a brave little dragon", "my cat", "space"
    name: str | None  # "Tom" for "my cat Tom"
    kind: str  # "character", "place" or "thing"
    noun: str  # the character or place word ("" for things)


def normalize_topic(topic: str, max_chars: int = 80) -> str:
    """The topic through safety.clean(), without lead-ins ("tell me a story about"), extra
    spaces and final punctuation. Raises TopicError when it is empty or longer than max_chars.
    It is not checked: accept_topic() is normalize_topic() and safety.check_topic()."""
    text = clean(topic)
    if len(text) > max_chars:
        raise TopicError(f"the topic is {len(text)} characters long; keep it under {max_chars} "
                         '(for example "a brave little dragon")')
    text = _LEAD_IN.sub("", text).strip(" .!?,;:")
    if not any(ch.isalpha() for ch in text):
        raise TopicError('tell me what the story is about (for example "a brave little dragon")')
    return text


def accept_topic(topic: str, blocklist: Blocklist, max_chars: int = 80, rng: random.Random | None = None) -> str:
    """The topic as a story can use it (clean and normalized), or TopicRefusedError (kind,
    with another topic offered: safety.check_topic) or TopicError (empty, too long)."""
    return normalize_topic(check_topic(topic, blocklist, rng), max_chars)


def parse_topic(topic: str) -> Topic:
    """Splits a normalized topic into phrase, name and kind (see the module docstring)."""
    name = None
    m = _NAMED.search(topic)
    if m:
        name, topic = m.group(1), topic[:m.start()]
    words = topic.split()
    lower = [w.lower() for w in words]
    noun_at = next((i for i, w in enumerate(lower) if w in CHARACTERS), None)
    if name is None and noun_at is not None and noun_at == len(words) - 2 and words[-1].isalpha() \
            and lower[-1] not in CHARACTERS and lower[-1] not in PLACES:
        name, words, lower = words[-1], words[:-1], lower[:-1]  # "my cat Tom", "a dog max"
    if name is None:  # a capitalized word after the first: "a dragon Spark"
        for i in range(1, len(words)):
            if words[i][:1].isupper() and words[i].isalpha() and words[i] != "I":
                name = words[i]
                del words[i], lower[i]
                break
    if name is None and len(words) == 1 and words[0][:1].isupper() and lower[0] not in CHARACTERS \
            and lower[0] not in PLACES:
        name, words, lower = words[0], [], []  # "Lily"
    phrase = " ".join(words)
    if noun_at is not None and any(w in CHARACTERS for w in lower):
        noun = next(w for w in lower if w in CHARACTERS)
        return Topic(phrase, name and name.capitalize(), "character", noun)
    place = next((w for w in reversed(lower) if w in PLACES), None)
    if place is not None:
        return Topic(phrase, name and name.capitalize(), "place", place)
    return Topic(phrase, name and name.capitalize(), "thing", "")


def _article(phrase: str) -> str:
    """ "a" or "an" before phrase (by its first letter; "un-" but not "uni-" takes "an")."""
    first = phrase.split()[0].lower() if phrase else ""
    if first[:1] in ("a", "e", "i", "o"):
        return "an"
    return "an" if first.startswith(("un", "um")) and not first.startswith("uni") else "a"


def _name_for(noun: str, rng: random.Random) -> str:
    if noun in GIRLS or noun in BOYS:
        return rng.choice(NAMES["girl" if noun in GIRLS else "boy"])
    if noun in PEOPLE:
        return rng.choice(NAMES[rng.choice(("girl", "boy"))])
    return rng.choice(PET_NAMES)


def opening(topic: str, rng: random.Random) -> str:
    """The first sentence(s) of a story about a normalized topic."""
    t = parse_topic(topic)
    words = t.phrase.split()
    if t.kind == "character" and "and" not in words:
        if words and words[0].lower() in DETERMINERS:
            words = words[1:]
        phrase = " ".join(words) or t.noun
        name = t.name or _name_for(t.noun, rng)
        return f"Once upon a time, there was {_article(phrase)} {phrase} named {name}."
    kid = next((k for k, names in NAMES.items() if t.name in names), None) or rng.choice(("girl", "boy"))
    name = t.name or rng.choice(NAMES[kid])
    if t.kind == "place":
        prep, det = PLACES[t.noun]
        if not words or words[0].lower() not in DETERMINERS:
            words = ([det] if det else []) + words
        where = " ".join([prep, *words])
        return f"Once upon a time, a little {kid} named {name} went on a big adventure {where}."
    if not t.phrase:
        return f"Once upon a time, there was a little {kid} named {name}."
    pronoun = "her" if kid == "girl" else "his"  # "my dog and my cat" -> "her dog and her cat"
    phrase = " ".join(pronoun if w.lower() in ("my", "our", "your") else w for w in words)
    return f"Once upon a time, there was a little {kid} named {name}. {name} loved {phrase}."


def _spacing(prefix: str) -> str:
    """The whitespace before a sentence as it is printed: a paragraph break or one space."""
    return "\n" * prefix.count("\n") or (" " if prefix else "")


_THE_END = re.compile(r"^\W*the\s+end\W*$", re.I)


def is_the_end(sentence: str) -> bool:
    """True for "The end." and its variants."""
    return bool(_THE_END.match(sentence))


# ----------------------------------------------------------------------------- telling


class Storyteller:
    """Tells stories with one session (its model and tokenizer) and one word list."""

    def __init__(self, session: Session, blocklist: Blocklist, options: StoryOptions | None = None) -> None:
        self.session = session
        self.blocklist = blocklist
        self.options = options or StoryOptions()
        self.blocked: list[str] = []  # sentences the filter kept out of the last story (for tests, logs)
        self._stop = threading.Event()

    def tell(self, topic: str) -> Iterator[Sentence]:
        """The story's sentences, each as soon as it is complete and checked.

        Raises (before anything is generated) TopicError for an empty or too long topic and
        TopicRefusedError for a topic, or the opening made from it, that is not for children.
        """
        o = self.options
        rng = random.Random(o.seed) if o.seed else random.Random()
        topic = accept_topic(topic, self.blocklist, o.max_topic_chars, rng)
        first = gate(opening(topic, rng), self.blocklist, topic=True)
        if not first.ok:
            raise refuse(rng)
        return self._tell(first.text, rng)

    def cancel(self) -> None:
        """Stops the story before its next token (thread-safe): nothing more is told."""
        self._stop.set()
        self.session.cancel()

    def _tell(self, text: str, rng: random.Random) -> Iterator[Sentence]:
        o = self.options
        self.blocked = []
        self._stop.clear()
        told = 0
        for sentence in split_text(text):
            if self._stop.is_set():
                return
            yield sentence
            told += 1
        accepted = text  # what the model has been given and said so far
        failures = 0  # blocked attempts at the current sentence
        ended = False
        while told < o.max_sentences and not ended and not self._stop.is_set():
            try:
                pieces = self.session.generate(accepted, temperature=o.temperature, top_p=o.top_p,
                                               seed=rng.randrange(1, 1 << 63), echo=False,
                                               stop_on_eos=True, keep_byte_pieces=True)
            except ContextFullError:
                break
            blocked = False
            for raw in split_stream(pieces):
                if self._stop.is_set():
                    break
                g = gate(raw.text, self.blocklist)
                if not g.ok:
                    self.blocked.append(raw.text)
                    blocked = True
                    break
                sentence = Sentence(g.text, _spacing(raw.prefix))
                yield sentence
                told += 1
                failures = 0
                accepted += raw.prefix + raw.text  # the model goes on from its own words
                ended = is_the_end(sentence.text)
                if ended or told >= o.max_sentences:
                    break
            pieces.close()  # type: ignore[attr-defined]
            if self._stop.is_set():
                return
            if not blocked:
                break  # the model ended the story (BOS, EOS, full context), or the budget did
            failures += 1
            if failures > o.retries:
                break  # drop the sentence: end the story before it
        if not ended and o.closing and not self._stop.is_set():
            yield Sentence(clean(o.closing), " ")
