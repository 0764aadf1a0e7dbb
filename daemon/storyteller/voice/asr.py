"""Speech to text, restricted to a grammar, behind one interface:

    rec = open_recognizer("pocketsphinx", grammar)     # or "vosk", model=PATH
    for chunk in source:                               # int16 mono at rec.rate
        text = rec.accept(chunk)                       # an utterance's text when it ended
    text = rec.flush()                                 # the end of the stream ends the utterance

- PocketSphinx: its English model ships in its wheel; a JSGF grammar and a dictionary cut to
  the grammar's words. Its voice activity endpointer decides where an utterance ends.
- Vosk: KaldiRecognizer with the grammar's phrases as JSON and "[unk]" for the rest; the
  model folder comes from the settings.

The engines are imported when a recognizer is opened, never before.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from storyteller.errors import StorytellerError
from storyteller.voice.commands import Grammar, dictionary

RATE = 16000  # both engines' models are 16 kHz
ENDPOINT_WINDOW_S = 0.3  # PocketSphinx: this much non-speech ends an utterance


class RecognizerError(StorytellerError):
    """A recognizer cannot start: its engine or model is missing or broken."""


class Recognizer(Protocol):
    name: str
    rate: int

    def accept(self, pcm: bytes) -> str | None:
        """Feeds int16 mono samples; the text of an utterance that just ended, else None."""

    def partial(self) -> str:
        """What the utterance in progress sounds like so far ("" when none)."""

    def flush(self) -> str | None:
        """Ends the utterance in progress (end of stream): its text, or None."""


class PocketSphinx:
    name = "pocketsphinx"
    rate = RATE

    def __init__(self, grammar: Grammar, model_dir: Path | None = None) -> None:
        try:
            import pocketsphinx  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise RecognizerError("speech recognition needs pocketsphinx (pip install pocketsphinx)") from None
        base = model_dir or Path(pocketsphinx.get_model_path()) / "en-us"
        with tempfile.TemporaryDirectory(prefix="storyteller-asr-") as d:
            gram, dic = Path(d) / "commands.gram", Path(d) / "commands.dict"
            gram.write_text(grammar.jsgf(), encoding="utf-8")
            dic.write_text(dictionary(grammar.words(), base / "cmudict-en-us.dict"), encoding="utf-8")
            try:
                self._decoder = pocketsphinx.Decoder(hmm=str(base / "en-us"), dict=str(dic), jsgf=str(gram),
                                                     samprate=RATE, loglevel="FATAL")
            except (RuntimeError, ValueError) as e:
                raise RecognizerError(f"pocketsphinx cannot start with {base}: {e}") from None
        self._endpointer = pocketsphinx.Endpointer(window=ENDPOINT_WINDOW_S, sample_rate=RATE)
        self._frame = self._endpointer.frame_bytes
        self._pending = b""
        self._in_utterance = False

    def accept(self, pcm: bytes) -> str | None:
        self._pending += pcm
        text = None
        while len(self._pending) >= self._frame:
            frame, self._pending = self._pending[:self._frame], self._pending[self._frame:]
            speech = self._endpointer.process(frame)
            if speech is not None:
                if not self._in_utterance:
                    self._decoder.start_utt()
                    self._in_utterance = True
                self._decoder.process_raw(speech)
            if self._in_utterance and not self._endpointer.in_speech:
                text = self._end() or text
        return text

    def partial(self) -> str:
        hyp = self._decoder.hyp() if self._in_utterance else None
        return hyp.hypstr if hyp is not None else ""

    def flush(self) -> str | None:
        frame = self._pending.ljust(self._frame, b"\0")
        self._pending = b""
        speech = self._endpointer.end_stream(frame)
        if speech is not None and self._in_utterance:
            self._decoder.process_raw(speech)
        return self._end() if self._in_utterance else None

    def _end(self) -> str | None:
        self._decoder.end_utt()
        self._in_utterance = False
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None and hyp.hypstr else None


class Vosk:
    name = "vosk"
    rate = RATE

    def __init__(self, model: Path, phrases_json: str) -> None:
        try:
            import vosk  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise RecognizerError("speech recognition with Vosk needs vosk (pip install vosk)") from None
        if not (model / "am").is_dir() and not (model / "conf").is_dir():
            raise RecognizerError(f"no Vosk model in {model} (unpack one there, e.g. vosk-model-small-en-us)")
        vosk.SetLogLevel(-1)
        try:
            self._model: Any = vosk.Model(os.fspath(model))
        except Exception as e:  # vosk raises a bare Exception for a bad folder
            raise RecognizerError(f"Vosk cannot load the model {model}: {e}") from None
        self._rec = vosk.KaldiRecognizer(self._model, RATE, phrases_json)

    def accept(self, pcm: bytes) -> str | None:
        if self._rec.AcceptWaveform(pcm):
            return self._text(self._rec.Result())
        return None

    def partial(self) -> str:
        return str(json.loads(self._rec.PartialResult()).get("partial", ""))

    def flush(self) -> str | None:
        return self._text(self._rec.FinalResult())

    @staticmethod
    def _text(result: str) -> str | None:
        text = str(json.loads(result).get("text", "")).strip()
        return text or None


def open_recognizer(engine: str, grammar: Grammar, model: Path | None = None) -> Recognizer:
    """A recognizer restricted to `grammar`: "pocketsphinx" (model: its folder, default the
    wheel's en-us) or "vosk" (model: the model folder, required)."""
    if engine == "pocketsphinx":
        return PocketSphinx(grammar, model)
    if engine == "vosk":
        if model is None:
            raise RecognizerError("Vosk needs a model folder: [voice] recognizer_model in the settings, or "
                                  "`storyteller models fetch vosk-small-en`")
        return Vosk(model, grammar.vosk_phrases())
    raise RecognizerError(f"unknown recognizer {engine!r} (pocketsphinx, vosk)")
