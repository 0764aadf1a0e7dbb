"""Sentence streaming (storyteller.sentences): each sentence as soon as it ends, quotes,
abbreviations, ellipses, dialogue, paragraphs; never half a sentence."""

from __future__ import annotations

import random

import pytest

from storyteller.sentences import MAX_QUOTED, Sentence, SentenceSplitter, split_stream, split_text


def texts(text: str) -> list[str]:
    return [s.text for s in split_text(text)]


CASES = {
    "plain": ("Tom ran. Sue sat! Did Ben hop? Yes.", ["Tom ran.", "Sue sat!", "Did Ben hop?", "Yes."]),
    "abbreviations": ("Mr. Smith met Mrs. Brown and Dr. Lee on St. Mark street. They smiled.",
                      ["Mr. Smith met Mrs. Brown and Dr. Lee on St. Mark street.", "They smiled."]),
    "initials": ("J. K. Rowling wrote books. I read them.", ["J. K. Rowling wrote books.", "I read them."]),
    "pronoun_I_ends": ("The winner was I. Then we ate.", ["The winner was I.", "Then we ate."]),
    "no_is_a_word": ('"No. I do not want it," said Tom.', ['"No. I do not want it," said Tom.']),
    "ellipsis_lowercase": ("She waited... and waited. Then she left.",
                           ["She waited... and waited.", "Then she left."]),
    "ellipsis_ends": ("She waited... The sun set.", ["She waited...", "The sun set."]),
    "unicode_ellipsis": ("She waited… The sun set.", ["She waited…", "The sun set."]),
    "dialogue_said": ('"Hi!" said Tom. "Hello," said Sue.', ['"Hi!" said Tom.', '"Hello," said Sue.']),
    "dialogue_name_first": ('"Let\'s go!" Tom said.', ['"Let\'s go!"', "Tom said."]),
    "quote_holds_sentences": ('"I am hungry. Let us eat!" said Mia. They ate.',
                              ['"I am hungry. Let us eat!" said Mia.', "They ate."]),
    "curly_quotes": ("“I am hungry. Let us eat!” said Mia. They ate.",
                     ["“I am hungry. Let us eat!” said Mia.", "They ate."]),
    "single_quotes": ("'Stop!' Tom cried. Sue stopped.", ["'Stop!'", "Tom cried.", "Sue stopped."]),
    "quote_after_period": ('He said "yes." She nodded.', ['He said "yes."', "She nodded."]),
    "interrobang": ("What?! No way. Ok.", ["What?!", "No way.", "Ok."]),
    "decimal_and_time": ("It cost 3.50 at 5 p.m. today. Wow.", ["It cost 3.50 at 5 p.m. today.", "Wow."]),
    "brackets": ("He ran (very fast.) Then he fell.", ["He ran (very fast.)", "Then he fell."]),
    "paragraphs": ("Tom ran.\n\nSue sat.\nThe end", ["Tom ran.", "Sue sat."]),  # unpunctuated tail: cut
    "newline_without_period": ("A title\nOnce upon a time.", ["A title", "Once upon a time."]),
    "newline_closes_a_quote": ('"Oh no\nTom ran. Sue sat.', ['"Oh no', "Tom ran.", "Sue sat."]),
    "unfinished_tail_dropped": ("Tom ran. Sue sat on the", ["Tom ran."]),
    "unfinished_only": ("Once upon a", []),
    "empty": ("", []),
    "spaces": ("  Tom ran.   Sue sat.  ", ["Tom ran.", "Sue sat."]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_split(case: str) -> None:
    text, expected = CASES[case]
    assert texts(text) == expected


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_in_any_pieces_gives_the_same_sentences(case: str) -> None:
    text, expected = CASES[case]
    rng = random.Random(case)
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text), rng.randint(0, 8))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert [s.text for s in split_stream(pieces)] == expected


def test_each_sentence_comes_out_as_soon_as_the_next_word_starts() -> None:
    sp = SentenceSplitter()
    assert sp.feed("Tom ran") == []
    assert sp.feed(".") == []  # could be "..." or "Mr."
    assert sp.feed(" ") == []
    assert [s.text for s in sp.feed("S")] == ["Tom ran."]
    assert sp.feed("ue sat.") == []
    assert [s.text for s in sp.close()] == ["Sue sat."]


def test_a_newline_releases_a_sentence_at_once() -> None:
    sp = SentenceSplitter()
    assert [s.text for s in sp.feed("Tom ran.\n")] == ["Tom ran."]


def test_prefixes_rebuild_the_text_and_mark_paragraphs() -> None:
    text = "Once upon a time. Tom ran.\n\nSue sat.  Ben hid."
    sentences = split_text(text)
    assert "".join(s.prefix + s.text for s in sentences) == text
    assert [s.starts_paragraph for s in sentences] == [False, False, True, False]
    assert str(sentences[1]) == "Tom ran." and sentences[2] == Sentence("Sue sat.", "\n\n")


def test_an_unclosed_quote_does_not_hold_sentences_forever() -> None:
    sentence = "Tom ran to the big red barn and back again."
    text = '"' + " ".join([sentence] * (MAX_QUOTED // len(sentence) + 2))
    out = texts(text)
    assert len(out) >= 2 and all(len(s) <= MAX_QUOTED + len(sentence) + 2 for s in out)


def test_pending_is_what_is_not_yet_a_sentence() -> None:
    sp = SentenceSplitter()
    sp.feed("Tom ran. Sue sat on")
    assert sp.pending.strip() == "Sue sat on" or sp.pending.endswith("Sue sat on")
