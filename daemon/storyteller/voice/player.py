"""Playing a sentence's WAV file through the default or a named audio output, as a child
process a sink can kill.

A named output is looked up where it can live: a sink of the running sound server
(PulseAudio or PipeWire's, listed by `pactl`) is played with `paplay --device=NAME`; any other
name is an ALSA device (`aplay -D NAME`: "plughw:1,0", "default", a name from asound.conf), as
on a board without a sound server. The name comes from the settings or the command line,
never from what a child says; it is one argument of a command run without a shell.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

from storyteller.voice.processes import NoAudioOutputError, Processes, complaint, no_output

PLAY_TIMEOUT_S = 600.0  # one sentence's WAV file played
DEFAULT_PLAYERS = (("aplay", "-q"), ("paplay",), ("pw-play",))  # the default output: first found on PATH


def check_device_name(name: str) -> str:
    """A device name that cannot be read as an option or carry control characters."""
    if not name or name.startswith("-") or not name.isprintable():
        raise NoAudioOutputError(f"audio output name {name!r} is not a device name")
    return name


def server_sinks() -> list[str]:
    """The sinks of the running sound server (empty: no pactl, or no server answers)."""
    pactl = shutil.which("pactl")
    if pactl is None:
        return []
    try:
        p = subprocess.run([pactl, "list", "short", "sinks"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split("\t")[1] for line in p.stdout.splitlines() if p.returncode == 0 and "\t" in line]


def player_argv(device: str | None) -> list[str] | None:
    """The command that plays a WAV file given as its last argument (None: no player here)."""
    if device is None:
        return next(([shutil.which(p[0]) or p[0], *p[1:]] for p in DEFAULT_PLAYERS if shutil.which(p[0])), None)
    device = check_device_name(device)
    paplay, aplay = shutil.which("paplay"), shutil.which("aplay")
    if paplay and device in server_sinks():
        return [paplay, f"--device={device}"]
    if aplay:
        return [aplay, "-q", "-D", device]
    raise NoAudioOutputError(f"audio output '{device}' is neither a sink of a running sound server nor an ALSA "
                             "device aplay can open (apt-get install alsa-utils)")


class Player:
    """Plays WAV files through one output; check() first, so a missing device fails at once."""

    def __init__(self, procs: Processes, device: str | None = None) -> None:
        self._procs, self.device = procs, device
        self._argv = player_argv(device)

    def check(self, scratch: Path) -> None:
        """Plays 10 ms of silence (for PROBE_S at most): NoAudioOutputError if nothing plays."""
        if self._argv is None:
            raise NoAudioOutputError("no audio output for text-to-speech: playing sound needs aplay, paplay or "
                                     "pw-play (apt-get install alsa-utils)")
        silence = scratch / "probe.wav"
        with wave.open(str(silence), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(22050)
            w.writeframes(b"\0\0" * 220)
        status, err = self._procs.probe([*self._argv, str(silence)], None)
        if status not in (0, None) or "error" in err.lower():
            raise self._failed(complaint(err) or f"exit status {status}")

    def play(self, wav: Path) -> None:
        assert self._argv is not None, "check() first"
        status, err = self._procs.run([*self._argv, str(wav)], None, PLAY_TIMEOUT_S)
        if status != 0:
            raise self._failed(complaint(err) or f"exit status {status}")

    def _failed(self, why: str) -> NoAudioOutputError:
        assert self._argv is not None
        program = Path(self._argv[0]).name
        if self.device is None:
            return no_output(program, why)
        return NoAudioOutputError(f"audio output '{self.device}' does not play ({program}: {why})")
