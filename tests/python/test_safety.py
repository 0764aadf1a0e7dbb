"""The word list behind the topic and output filters (storyteller.safety, etc/blocklist.txt)."""

from __future__ import annotations

import random

import pytest

from storyteller import errors
from storyteller.config import data_file
from storyteller.safety import SAFE_TOPICS, Blocklist, check_topic
from storyteller.story import opening

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
