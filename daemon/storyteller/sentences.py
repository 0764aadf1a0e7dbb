"""Cutting streamed text into complete sentences, each as soon as it ends.

A sentence ends at . ! ? or an ellipsis, with any closing quotes or brackets after it, once
the next word shows it is really over:

- the next word starts with a lowercase letter (or a , ; :): it is not over —
  `"Hi!" said Tom.` and `She waited... and waited.` are one sentence each;
- the word before a single "." is an abbreviation (Mr. Mrs. Dr. St. ...) or an initial: not over;
- inside an open double quote it is not over, so a line of dialogue stays whole
  (unless it runs past MAX_QUOTED characters);
- a newline always ends the sentence (a paragraph break), punctuated or not.

The decision needs the first character of the next word, so a sentence comes out one
token after its last; close() releases the last one. Text after the last complete
sentence is never returned as a sentence: a story is not cut in half.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

TERMINALS = ".!?…"
CLOSERS = "\"'”’)]"
ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mt jr sr prof capt lt sgt rev fr mx vs".split())
MAX_QUOTED = 250  # characters of an open quote after which a sentence may end inside it


@dataclass(frozen=True)
class Sentence:
    """A complete sentence and the whitespace before it in the text ("\\n" in `prefix`: it
    starts a paragraph). prefix + text rebuilds the stream."""

    text: str
    prefix: str = ""

    @property
    def starts_paragraph(self) -> bool:
        return "\n" in self.prefix

    def __str__(self) -> str:
        return self.text


class SentenceSplitter:
    """Incremental splitter: feed() text pieces, get the sentences they complete."""

    def __init__(self) -> None:
        self._buf = ""  # text not yet returned, from the previous sentence's end
        self._pos = 0  # next character of _buf to look at
        self._start: int | None = None  # where the sentence's text starts (None: not yet)
        self._in_quote = False
        self._end: int | None = None  # just past a candidate end (terminal + closers)
        self._space_after_end = False  # whitespace seen after the candidate end

    def feed(self, text: str) -> list[Sentence]:
        """The sentences that `text` completes (often none)."""
        self._buf += text
        out: list[Sentence] = []
        while self._pos < len(self._buf):
            if (s := self._step(self._buf[self._pos])) is not None:
                out.append(s)
        return out

    def close(self) -> list[Sentence]:
        """The last sentence, if the text ends with one (unfinished text is dropped)."""
        out: list[Sentence] = []
        if self._end is not None:
            out.append(self._emit(self._end))
        self._buf, self._pos, self._start = "", 0, None
        return out

    @property
    def pending(self) -> str:
        """Text received but not (yet) part of a returned sentence."""
        return self._buf

    # -- the scanner -------------------------------------------------------------------

    def _step(self, c: str) -> Sentence | None:
        """Looks at _buf[_pos]; advances _pos unless the character starts the next sentence
        (which is then scanned again after the returned sentence is cut off)."""
        if c == "\n":
            if self._start is not None:
                return self._emit(self._end if self._end is not None else self._pos)
            self._pos += 1
            return None
        if self._end is not None:
            if c.isspace():
                self._space_after_end = True
                self._pos += 1
                return None
            if not self._space_after_end:
                if c in TERMINALS or c in CLOSERS:  # "?!", "...", closing quotes
                    self._track_quote(c)
                    self._pos += 1
                    self._end = self._pos
                    return None
                self._end = None  # "3.5", "a.m": no end here
            elif self._is_real_end(c):
                return self._emit(self._end)
            else:
                self._end = None
        if c.isspace():
            self._pos += 1
            return None
        if self._start is None:
            self._start = self._pos
        self._track_quote(c)
        self._pos += 1
        if c in TERMINALS:
            self._end, self._space_after_end = self._pos, False
        return None

    def _track_quote(self, c: str) -> None:
        if c == '"':
            self._in_quote = not self._in_quote
        elif c == "“":
            self._in_quote = True
        elif c == "”":
            self._in_quote = False

    def _is_real_end(self, nxt: str) -> bool:
        """Whether the candidate end is one, now that the next word starts with `nxt`."""
        assert self._end is not None and self._start is not None
        if nxt.islower() or nxt in ",;:":
            return False
        if self._in_quote and self._end - self._start < MAX_QUOTED:
            return False
        sentence = self._buf[self._start:self._end].rstrip(CLOSERS)
        if sentence.endswith(".") and not sentence.endswith(".."):
            word = sentence[:-1].split()[-1] if sentence[:-1].split() else ""
            word = word.lstrip("\"'“‘([")
            if word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper() and word != "I"):
                return False
        return True

    def _emit(self, end: int) -> Sentence:
        """Cuts _buf[:end] off as a sentence; scanning resumes at `end`."""
        start = self._start if self._start is not None else end
        sentence = Sentence(self._buf[start:end].strip(), self._buf[:start])
        self._buf = self._buf[end:]
        self._pos = 0
        self._start = None
        self._end = None
        self._space_after_end = False
        if sentence.starts_paragraph or "\n" in self._buf[:1]:
            self._in_quote = False
        return sentence


def split_stream(pieces: Iterable[str]) -> Iterator[Sentence]:
    """Complete sentences of streamed text, each as soon as it is known to have ended."""
    splitter = SentenceSplitter()
    for piece in pieces:
        yield from splitter.feed(piece)
    yield from splitter.close()


def split_text(text: str) -> list[Sentence]:
    """The complete sentences of a finished text."""
    return list(split_stream([text]))
