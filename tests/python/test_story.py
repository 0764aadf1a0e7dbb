"""Stories (storyteller.story): topic -> opening, stopping rules, the output filter at work,
cancel. Models are scripted (package_support.write_scripted_model): the engine and the
tokenizer are real, the continuations known."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import package_support as ps
import pytest

ps.use_host_library()

from storyteller import errors  # noqa: E402
from storyteller.config import data_file  # noqa: E402
from storyteller.engine import Model, Session, Tokenizer  # noqa: E402
from storyteller.safety import Blocklist  # noqa: E402
from storyteller.story import StoryOptions, Storyteller, is_the_end, normalize_topic, opening, parse_topic  # noqa: E402

# "." is followed by " Tom ran." or " The gun fell." (blocked: "gun"), equally likely.
GUN = {".": [(" Tom", 28), (" The", 28)], " Tom": [(" ran", 30)], " ran": [(".", 30)],
       " The": [(" gun", 30)], " gun": [(" fell", 30)], " fell": [(".", 30)]}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.open(ps.TOKENIZER)


@pytest.fixture(scope="module")
def blocklist() -> Blocklist:
    return Blocklist.load(data_file("blocklist.txt"))


def session_for(tmp: Path, tok: Tokenizer, chains: dict[str, list[tuple[str, float]]],
                seq_len: int = 256) -> Session:
    return Model.open(ps.write_scripted_model(tmp / "m.bin", chains, seq_len=seq_len)).session(tok)


def tell(session: Session, blocklist: Blocklist, topic: str = "a brave little dragon", **options: object) -> list[str]:
    teller = Storyteller(session, blocklist, StoryOptions(**{"seed": 1, **options}))  # type: ignore[arg-type]
    return [s.text for s in teller.tell(topic)]


# ----------------------------------------------------------------------------- topics


@pytest.mark.parametrize(("topic", "clean"), [
    ("a brave little dragon", "a brave little dragon"),
    ("  Tell me a story about   my cat Tom! ", "my cat Tom"),
    ("please tell us a story about space.", "space"),
    ("a story about the sea", "the sea"),
    ("about dinosaurs", "dinosaurs"),
])
def test_normalize_topic(topic: str, clean: str) -> None:
    assert normalize_topic(topic) == clean


def test_topic_too_long_or_empty() -> None:
    with pytest.raises(errors.TopicError, match="81 characters long; keep it under 80"):
        normalize_topic("a" * 81)
    assert normalize_topic("a" * 80)
    for empty in ("", "   ", "?!", "tell me a story about"):
        with pytest.raises(errors.TopicError, match="what the story is about"):
            normalize_topic(empty)


@pytest.mark.parametrize(("topic", "name", "kind"), [
    ("my cat Tom", "Tom", "character"),
    ("my cat tom", "Tom", "character"),
    ("a dog called max", "Max", "character"),
    ("an owl named Hoot", "Hoot", "character"),
    ("a dragon Spark", "Spark", "character"),
    ("a brave little dragon", None, "character"),
    ("a dragon castle", None, "character"),
    ("Lily", "Lily", "thing"),
    ("space", None, "place"),
    ("the dark forest", None, "place"),
    ("ice cream", None, "thing"),
])
def test_parse_topic(topic: str, name: str | None, kind: str) -> None:
    t = parse_topic(topic)
    assert (t.name, t.kind) == (name, kind)


@pytest.mark.parametrize(("topic", "expected"), [
    ("a brave little dragon", r"Once upon a time, there was a brave little dragon named [A-Z]\w+\.$"),
    ("my cat Tom", r"Once upon a time, there was a cat named Tom\.$"),
    ("an old owl", r"Once upon a time, there was an old owl named [A-Z]\w+\.$"),
    ("a unicorn", r"Once upon a time, there was a unicorn named [A-Z]\w+\.$"),
    ("space", r"Once upon a time, a little (girl|boy) named [A-Z]\w+ went on a big adventure in space\.$"),
    ("the moon", r"Once upon a time, a little (girl|boy) named \w+ went on a big adventure on the moon\.$"),
    ("forest", r"went on a big adventure in the forest\.$"),
    ("ice cream", r"Once upon a time, there was a little (girl|boy) named (\w+)\. \2 loved ice cream\.$"),
    ("my dog and my cat", r"named (\w+)\. \1 loved (her|his) dog and \2 cat\.$"),
    ("Lily", r"Once upon a time, there was a little girl named Lily\.$"),
    ("a princess", r"there was a princess named (Lily|Mia|Sue|Anna|Lucy|Zoe|Amy|Emma)\.$"),
])
def test_openings(topic: str, expected: str) -> None:
    for seed in range(5):
        assert __import__("re").search(expected, opening(topic, random.Random(seed)))


def test_opening_depends_on_the_seed_only() -> None:
    a = [opening("a brave little dragon", random.Random(s)) for s in range(20)]
    assert a == [opening("a brave little dragon", random.Random(s)) for s in range(20)]
    assert len(set(a)) > 3


def test_the_end() -> None:
    assert is_the_end("The end.") and is_the_end("THE END!") and is_the_end("The End")
    assert not is_the_end("The end of the day came.")


# ----------------------------------------------------------------------------- telling


def test_sentence_budget_and_closing(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [(".", 30)]})
    story = tell(s, blocklist, max_sentences=5)
    assert story[0].startswith("Once upon a time, there was a brave little dragon named")
    assert story[1:] == ["Tom ran."] * 4 + ["The end."]
    assert tell(s, blocklist, max_sentences=3, closing="") == [story[0], "Tom ran.", "Tom ran."]


def test_the_end_stops_the_story(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [("!", 30)],
                                    "!": [(" The", 30)], " The": [(" end", 30)], " end": [(".", 30)]})
    assert tell(s, blocklist)[1:] == ["Tom ran!", "The end."]


@pytest.mark.parametrize("stop", ["<s>", "</s>"])
def test_bos_and_eos_end_the_story(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist, stop: str) -> None:
    s = session_for(tmp_path, tok, {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [("!", 30)],
                                    "!": [(stop, 30)]})
    assert tell(s, blocklist)[1:] == ["Tom ran!", "The end."]


def test_a_full_context_never_cuts_a_sentence(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    # " Tom ran on and on and on ..." never ends: no sentence can be told after the opening
    s = session_for(tmp_path, tok, {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [(" on", 30)],
                                    " on": [(" and", 30)], " and": [(" on", 30)]}, seq_len=64)
    assert tell(s, blocklist)[1:] == ["The end."]


def test_blocked_sentences_are_regenerated_never_told(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, GUN)
    blocked_any = False
    for seed in range(1, 6):
        teller = Storyteller(s, blocklist, StoryOptions(seed=seed, max_sentences=8, retries=10))
        story = [x.text for x in teller.tell("a brave little dragon")]
        assert story[1:] == ["Tom ran."] * 7 + ["The end."]
        assert all(blocklist.find(x) is None for x in story)
        blocked_any |= "The gun fell." in teller.blocked
    assert blocked_any


def test_a_sentence_blocked_every_time_is_dropped_and_the_story_ends(tmp_path: Path, tok: Tokenizer,
                                                                    blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, {".": [(" The", 30)], " The": [(" gun", 30)], " gun": [(" fell", 30)],
                                    " fell": [(".", 30)]})
    teller = Storyteller(s, blocklist, StoryOptions(seed=3, retries=2))
    story = [x.text for x in teller.tell("a kind robot")]
    assert story[1:] == ["The end."]
    assert teller.blocked == ["The gun fell."] * 3


def test_refused_topic_offers_another(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, GUN)
    with pytest.raises(errors.TopicRefusedError) as e:
        Storyteller(s, blocklist).tell("a big gun")
    assert e.value.alternative in str(e.value) and blocklist.find(e.value.alternative) is None


def test_cancel_stops_the_story_before_the_next_token(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, {".": [(" Tom", 30)], " Tom": [(" ran", 30)], " ran": [(".", 30)]})
    teller = Storyteller(s, blocklist, StoryOptions(seed=1, max_sentences=50))
    story = teller.tell("a brave little dragon")
    got = [next(story).text, next(story).text]
    t = threading.Thread(target=teller.cancel)
    t.start()
    t.join()
    assert list(story) == [] and got[1] == "Tom ran."  # no closing either


# ----------------------------------------------------------------------------- the gate (issue 9)

# After a ".", one of three sentences, equally likely: "Sue loved [[S'It]] a lot."
# (espeak-ng phonemes: told only with the brackets made harmless), "The gu\u00adn fell." (a
# soft hyphen inside "gun") and "Tom saw \u043aill." (Cyrillic ka): both blocked.
TRICKS = {".": [(" Sue", 28), (" The", 28), (" Tom", 28)],
          " Sue": [(" loved", 30)], " loved": [(" [[", 30)], " [[": [("S", 30)], "S": [("'", 30)], "'": [("It", 30)],
          "It": [("]]", 30)], "]]": [(" a", 30)], " a": [(" lot", 30)], " lot": [(".", 30)],
          " The": [(" gu", 30)], " gu": [("<0xC2>", 30)], "<0xC2>": [("<0xAD>", 30)], "<0xAD>": [("n", 30)],
          "n": [(" fell", 30)], " fell": [(".", 30)],
          " Tom": [(" saw", 30)], " saw": [(" \u043a", 30)], " \u043a": [("ill", 30)], "ill": [(".", 30)]}
SUE = "Sue loved ((S'It)) a lot."


def test_generated_sentences_are_told_through_the_gate(tmp_path: Path, tok: Tokenizer, blocklist: Blocklist) -> None:
    s = session_for(tmp_path, tok, TRICKS)
    blocked: set[str] = set()
    told: list[str] = []
    for seed in range(1, 6):
        teller = Storyteller(s, blocklist, StoryOptions(seed=seed, max_sentences=6, retries=10))
        story = [x.text for x in teller.tell("a brave little dragon")]
        assert story[0].startswith("Once upon a time") and set(story[1:]) <= {SUE, "The end."}, story
        blocked |= set(teller.blocked)
        told += story
    assert blocked == {"The gu\u00adn fell.", "Tom saw \u043aill."} and SUE in told
