"""The text gate and the word list behind the topic and output filters (storyteller.safety,
etc/blocklist.txt), and the two topic corpora (tests/data/topics-*.txt)."""

from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import cast

import pytest

from storyteller import errors
from storyteller.config import data_file
from storyteller.engine import Session
from storyteller.safety import SAFE_TOPICS, TYPOGRAPHIC, Blocklist, check_topic, clean, gate
from storyteller.story import StoryOptions, Storyteller, opening

LIST = Blocklist(["gun", "bush", "party", "kill*", "shut up", "hell", "ass"])


@pytest.mark.parametrize("text", [
    "He had a gun.", "GUNS are loud", "Two Guns.", "the bushes moved", "a party", "three parties",
    "They killed it", "a killer whale", "Kill!", "Shut up, Tom!", "shut   up", "Go to hell.",
    '"gun"', "gun's handle", "(gun)",
])
def test_blocked(text: str) -> None:
    assert LIST.find(text) is not None


@pytest.mark.parametrize("text", [
    "Hello there.", "a shell on the beach", "a class of kids", "the grass is green", "Lily passed the ball",
    "a gunny sack", "shutter up high", "skill and will", "partly sunny", "begun", "",
])
def test_clean(text: str) -> None:
    assert LIST.find(text) is None


def test_find_returns_the_word_as_written() -> None:
    assert LIST.find("Two Guns here") == "Guns"


def test_empty_list_blocks_nothing() -> None:
    assert Blocklist([]).find("gun") is None
    assert Blocklist(["", "  ", "*"]).find("anything") is None


def test_default_list_loads_and_blocks(tmp_path) -> None:
    bl = Blocklist.load(data_file("blocklist.txt"))
    assert len(bl.entries) > 40
    for bad in ("He killed the dragon.", "There was blood.", "A GUN!", "Shut up!", "He was drunk."):
        assert bl.find(bad), bad
    for good in ("Once upon a time, Lily went to the park.", "The horse lived in a stable.",
                 "A shooting star crossed the sky.", "Hello, said the shell.", "Mom cut the bread."):
        assert bl.find(good) is None, good
    f = tmp_path / "list.txt"
    f.write_text("# comment\nbanana  # inline comment\n\n")
    assert Blocklist.load(f).entries == ("banana",)


def test_missing_list_is_a_config_error(tmp_path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read the word list"):
        Blocklist.load(tmp_path / "none.txt")


def test_topic_filter_refuses_politely_and_offers_a_safe_topic() -> None:
    bl = Blocklist.load(data_file("blocklist.txt"))
    for topic in ("a zombie", "guns", "my cat who KILLS mice", "beer"):
        with pytest.raises(errors.TopicRefusedError) as e:
            check_topic(topic, bl, random.Random(1))
        assert str(e.value).startswith("I'm sorry, I can't tell a story about that. How about a story about ")
        assert e.value.alternative in SAFE_TOPICS
    check_topic("a brave little dragon", bl)  # no exception


def test_offered_topics_and_their_openings_are_clean() -> None:
    bl = Blocklist.load(data_file("blocklist.txt"))
    for topic in SAFE_TOPICS:
        check_topic(topic, bl)
        for seed in range(10):
            assert bl.find(opening(topic, random.Random(seed))) is None


# ----------------------------------------------------------------------------- the text gate (issue 9)

BLOCKLIST = Blocklist.load(data_file("blocklist.txt"))
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(("text", "clean_text"), [
    ("a k\u00adnife and a gu\u00adn", "a knife and a gun"),  # soft hyphens
    ("a gu\u200bn", "a gun"), ("a gu\u200dn", "a gun"), ("a g\u2060un", "a gun"), ("a gu\ufeffn", "a gun"),
    ("a \u202egun\u202c", "a gun"), ("a ki\u200fll", "a kill"), ("a \u2067bomb\u2069", "a bomb"),  # bidi
    ("a g\U000e0075un", "a gun"), ("a b\U000e0078omb", "a bomb"),  # tag characters
])
def test_format_characters_are_removed(text: str, clean_text: str) -> None:
    assert clean(text) == clean_text
    assert BLOCKLIST.find(text, topic=True) in clean_text.split()


@pytest.mark.parametrize(("text", "clean_text"), [
    ("a k\u0308nife", "a knife"), ("a g\u0336u\u0336n\u0336", "a gun"), ("a gun\ufe0f", "a gun"),
    ("a gu\u034fn", "a gun"), ("a bl\u0489ood", "a blood"), ("a café", "a cafe"), ("kïll", "kill"),
])
def test_combining_marks_are_removed(text: str, clean_text: str) -> None:
    assert clean(text) == clean_text


@pytest.mark.parametrize(("text", "clean_text"), [
    ("a \uff47\uff55\uff4e", "a gun"),  # fullwidth
    ("a \U0001d420\U0001d42e\U0001d427", "a gun"), ("a \U0001d4f0\U0001d4fe\U0001d4f7", "a gun"),  # math bold, script
    ("a \u24d6\u24e4\u24dd", "a gun"), ("a \u1d33\u1d41\u1d3a", "a GUN"),  # circled, superscript
    ("\ufb01ne", "fine"),  # a ligature
])
def test_compatibility_forms_are_folded_by_nfkc(text: str, clean_text: str) -> None:
    assert clean(text) == clean_text


@pytest.mark.parametrize(("text", "clean_text"), [
    ("a \u043anife", "a knife"), ("\u0430 \u043anife", "a knife"),  # Cyrillic
    ("a \u03ba\u03b9\u0399\u0399", "a kill"), ("a b\u03bfmb", "a bomb"),  # Greek
    ("A \u13c0UN", "A GUN"), ("A \u13a0\u13ac\u13aa\u13a0", "A DEAD"),  # Cherokee
    ("a \u0262\u1d1c\u0274", "a gun"), ("a \u0142ight", "a light"), ("stra\u00dfe", "strasse"),  # small capitals, Latin
])
def test_look_alike_letters_become_the_ascii_they_look_like(text: str, clean_text: str) -> None:
    assert clean(text) == clean_text


@pytest.mark.parametrize(("text", "clean_text", "dropped"), [
    ("a \U0001f52b", "a", "\U0001f52b"),  # espeak-ng says "pistol"
    ("Sue loved \U0001f37a.", "Sue loved .", "\U0001f37a"),  # "beer mug"
    ("a \u2620 flag", "a flag", "\u2620"), ("\u041b\u0438\u0437\u0430 ran.", "a ran.", "\u041b\u0438\u0437"),
    ("a cat\x01 40P", "a cat 40P", "\x01"), ("a \x1b[31mred\x1b[0m cat", "a (31mred (0m cat", "\x1b\x1b"),
    ("x\ue000y\udc80z", "xyz", "\ue000\udc80"),  # private use, a lone surrogate (a stray byte)
])
def test_other_scripts_emoji_and_controls_are_dropped_and_told(text: str, clean_text: str, dropped: str) -> None:
    g = gate(text, BLOCKLIST)
    assert (g.text, g.dropped, g.ok) == (clean_text, dropped, False)


@pytest.mark.parametrize(("text", "clean_text"), [
    ("Sue loved [[S'It]].", "Sue loved ((S'It))."), ("[[k'Il]]", "((k'Il))"),
    ("a \uff3b\uff3bS'It\uff3d\uff3d", "a ((S'It))"),  # fullwidth brackets, after NFKC
    ('<say-as interpret-as="characters">gun</say-as>', '(say-as interpret-as="characters")gun(/say-as)'),
    ("{a} b\\c ^ d_e `f` g|h ~i", "(a) b c d e f g h i"),
])
def test_espeak_markup_is_neutralised(text: str, clean_text: str) -> None:
    assert clean(text) == clean_text


def test_clean_keeps_plain_story_text_and_is_idempotent() -> None:
    story = ("Once upon a time, there was a little girl named Lily. She said, \u201cHi, Tom!\u201d "
             "Tom\u2019s dog\u2014Spot\u2014ran 3.5 miles... \"Wow!\" (It was 100% fun & games.) The end.")
    assert clean(story) == story
    for text in [*read_corpus("topics-adversarial.txt"), *read_corpus("topics-ordinary.txt")]:
        once = clean(text[0])
        assert clean(once) == once
        assert {c for c in once if not c.isascii()} <= TYPOGRAPHIC


@pytest.mark.parametrize("text", [
    "k1ll", "KILL", "kiII", "sh!t", "sh1t", "$hit", "h3ll", "b0mb", "a$$", "@ss", "f**k", "sh*t",
    "k n i f e", "K N I F E", "g.u.n", "k-n-i-f-e", "d, e, v, i, l", "gu-n", "kni-fe", "de.vil", "vvar", "bornb",
])
def test_look_alike_spellings_are_matched(text: str) -> None:
    assert BLOCKLIST.find(f"a {text} here", topic=True) is not None


@pytest.mark.parametrize("text", [
    "a hero in the city", "He'll go.", "a diesel train", "Hello there.", "a click and a clock", "a skillful cat",
    "a shooting star", "a swordfish", "a pillow fort", "a dice game", "Lily passed the ball", "a class trip",
    "3 little pigs", "5 ducks", "A B C D", "I am 4.", "the shell", "e.g. a dog", "T-rex", "a jack-in-the-box",
    "He said: d, e, f.", "Sussex", "a bass", "a massive hug", "will it rain?", "a hill", "kiln", "Hell-o? no: Hello",
])
def test_near_misses_are_not_matched(text: str) -> None:
    found = BLOCKLIST.find(text, topic=True)
    assert found is None or text == "Hell-o? no: Hello", found


def test_topic_only_entries_refuse_topics_but_not_sentences(tmp_path: Path) -> None:
    for sentence in ("Mom cut the bread with a knife.", "Tom fell and hurt his knee.", "The flower died.",
                     "The knight held up his sword."):
        assert BLOCKLIST.find(sentence) is None and gate(sentence, BLOCKLIST).ok, sentence
        assert BLOCKLIST.find(sentence, topic=True) is not None, sentence
    f = tmp_path / "list.txt"
    f.write_text("gun\n[topics]\nknife  # topics only\n")
    bl = Blocklist.load(f)
    assert (bl.entries, bl.topic_entries) == (("gun",), ("knife",))
    assert bl.find("a knife") is None and bl.find("a knife", topic=True) == "knife"
    assert bl.find("a gun") == "gun" and bl.find("a gun", topic=True) == "gun"


@pytest.mark.parametrize("topic", ["a knife", "hurts people", "a dead body", "people who die", "alcohol and pills",
                                   "the devil", "a swordfight"])
def test_polite_phrasings_of_blocked_topics_are_refused(topic: str) -> None:
    with pytest.raises(errors.TopicRefusedError) as e:
        check_topic(topic, BLOCKLIST, random.Random(1))
    assert e.value.alternative in SAFE_TOPICS and e.value.refusal.startswith("I'm sorry, I can't tell a story")


# ----------------------------------------------------------------------------- the two corpora


def read_corpus(name: str) -> list[tuple[str, str | None]]:
    """tests/data/NAME: (topic, the harmless text it may be told as, or None: refused)."""
    out = []
    for line in (DATA / name).read_text(encoding="ascii").splitlines():
        if line.strip() and not line.startswith("#"):
            topic, _, harmless = line.partition(" => ")
            out.append((topic.encode("ascii").decode("unicode_escape"), harmless or None))
    return out


class NoModel:
    """A session with nothing to say: tell() gives the opening and the closing."""

    def generate(self, *args: object, **kwargs: object) -> Iterator[str]:
        raise errors.ContextFullError("no model here")

    def cancel(self) -> None:
        pass


def told(topic: str, seed: int = 1) -> list[str]:
    """What `storyteller tell TOPIC` would print (and speak) before the model's first word."""
    teller = Storyteller(cast(Session, NoModel()), BLOCKLIST, StoryOptions(seed=seed))
    return [s.prefix + s.text for s in teller.tell(topic)]


def test_corpora_are_big_enough() -> None:
    assert len(read_corpus("topics-adversarial.txt")) >= 200 and len(read_corpus("topics-ordinary.txt")) >= 200


def test_every_adversarial_topic_is_refused_or_harmless() -> None:
    wrong = []
    for topic, harmless in read_corpus("topics-adversarial.txt"):
        for seed in (1, 2):
            try:
                story = "".join(told(topic, seed))
            except errors.TopicRefusedError as e:
                if harmless is not None or e.alternative not in SAFE_TOPICS:
                    wrong.append((topic, "refused"))
                continue
            if harmless is None or harmless not in story or BLOCKLIST.find(story, topic=True) or not story.isascii():
                wrong.append((topic, story))
    assert not wrong, f"{len(wrong)} adversarial topics told: {wrong[:20]}"


def test_every_ordinary_topic_is_accepted_unchanged() -> None:
    wrong = []
    for topic, _ in read_corpus("topics-ordinary.txt"):
        try:
            story = told(topic)
        except (errors.TopicRefusedError, errors.TopicError) as e:
            wrong.append((topic, str(e)))
            continue
        clean_story = all(gate(s, BLOCKLIST, topic=True).ok for s in story)
        if clean(topic) != topic or story[-1] != " The end." or not clean_story:
            wrong.append((topic, "".join(story)))
    assert not wrong, f"{len(wrong)} ordinary topics refused or changed: {wrong[:20]}"


def test_the_look_alike_table_is_made_from_unicode_data() -> None:
    pytest.importorskip("confusable_homoglyphs", reason="pip install confusable-homoglyphs (scripts/install-deps)")
    made_with = (DATA.parents[1] / "daemon" / "storyteller" / "_confusables.py").read_text(encoding="utf-8")
    versions = (f"confusable-homoglyphs {metadata.version('confusable-homoglyphs')} ",
                f"Unicode {unicodedata.unidata_version} letter names")
    if not all(v in made_with for v in versions):
        pytest.skip(f"the table was made with other data than {' and '.join(versions)}")
    p = subprocess.run([sys.executable, str(DATA.parents[1] / "scripts" / "make-confusables"), "--check"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
