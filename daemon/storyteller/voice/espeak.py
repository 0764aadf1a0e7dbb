"""The espeak-ng command as a text-to-speech backend."""

from __future__ import annotations

from pathlib import Path

from storyteller.voice.player import Player
from storyteller.voice.processes import Processes, SpeechError, complaint, no_output

SYNTH_TIMEOUT_S = 120.0  # one sentence to a WAV file, on a slow board
SPEAK_TIMEOUT_S = 600.0  # one sentence spoken


class EspeakNg:
    """The espeak-ng command, one process per sentence: `-w FILE --stdin` for WAV files,
    `--stdin` to speak. A speaking process that dies (killed from outside, crashed) costs
    the rest of its sentence only: the next sentence starts a new one (a long-lived process
    reading a line per sentence would take every queued sentence with it). Text
    is plain text: no -m (SSML) is ever passed; "[[" phonemes cannot be turned off, which is
    why say() removes the brackets."""

    name = "espeak-ng"

    def __init__(self, exe: str, voice: str | None, rate: int, procs: Processes, volume: int = 100,
                 device: str | None = None) -> None:
        # espeak-ng speaks only to the default output: a named one gets each sentence's WAV
        # file through a player (storyteller.voice.player).
        self._device = device
        self.speaks_files = device is not None
        self._player: Player | None = None
        self._base = [exe, "-b", "1", "-s", str(rate), *(["-v", voice] if voice else [])]
        self._argv: list[str] = []
        self.set_volume(volume)
        self.restarts = 0  # speaking processes that died on their own; the next sentence went on
        self._procs = procs
        status, err = procs.run([*self._argv, "-q", "--stdin"], "", 30.0)  # the voice exists, it runs
        if status != 0:
            raise SpeechError(f"text-to-speech: espeak-ng fails ({complaint(err) or f'exit status {status}'})")

    def set_volume(self, volume: int) -> None:
        """From the next sentence on: espeak-ng's amplitude (-a; 100 is its own)."""
        self._argv = [*self._base, *(["-a", str(volume)] if volume != 100 else [])]

    def to_wav(self, text: str, path: Path) -> None:
        status, err = self._procs.run([*self._argv, "-w", str(path), "--stdin"], text, SYNTH_TIMEOUT_S)
        if status < 0:  # killed, not by stop(): once more with a new process
            self.restarts += 1
            status, err = self._procs.run([*self._argv, "-w", str(path), "--stdin"], text, SYNTH_TIMEOUT_S)
        if status != 0 or not path.is_file():
            raise SpeechError(f"text-to-speech: espeak-ng failed ({complaint(err) or f'exit status {status}'})")

    def check_output(self, scratch: Path) -> None:
        if self._device is not None:
            self._player = Player(self._procs, self._device)
            self._player.check(scratch)
            return
        _, err = self._procs.probe([*self._argv, "--stdin"], "")  # an empty utterance opens the device
        if "error" in err.lower():
            raise no_output("espeak-ng", complaint(err))

    def speak(self, text: str, wav: Path | None) -> None:
        if self._player is not None:
            assert wav is not None
            self._player.play(wav)
            return
        status, err = self._procs.run([*self._argv, "--stdin"], text, SPEAK_TIMEOUT_S)
        if "error" in err.lower():
            raise no_output("espeak-ng", complaint(err))
        if status < 0:  # killed, not by stop() (run() raised Stopped then): the next sentence gets a new one
            self.restarts += 1
        elif status != 0:
            raise SpeechError(f"text-to-speech: espeak-ng ended with status {status}")

    def finish(self) -> None:
        pass  # speak() says each sentence to its end
