"""The storytelling robot: a child asks (by voice, the button, or `storyteller say`), the story
is spoken while it is still being written, "stop" silences it.

    storyteller daemon [--input default|wav:FILE|NAME] [--output default|wav:FILE|NAME] [--socket PATH]
    storyteller say a dragon | storyteller stop | storyteller status      (to the running daemon)
    storyteller listen --wav REQUEST.wav --speak-wav STORY.wav            (one request, file to file)

The only module that wires the voice (storyteller.voice: microphone, recognizer, button,
speech) to the stories (storyteller.story, on storyteller.engine). States:

    idle ──(input opened)──> listening ──(request)──> generating ──(first sentence)──> speaking
      ^                          ^                                                        │
      └──────────────────────────┴──────────────(story told, or stop from any state)──────┘

One thread per blocking job: the listener (microphone → recognizer), the control socket, the
button, the teller (model → sentences → speech); the main loop takes their events from one
queue, changes the state, and pings systemd's watchdog only while every thread is alive.

What a child says reaches the story only as a command of etc/commands.txt and a topic of
etc/topics.txt (the recognizer hears nothing else); what `say` sends is a topic that
storyteller.safety checks like any other. Neither becomes a path or a command line. The
control socket is a Unix socket, mode 0660; there is no network port.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import os
import queue
import random
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from storyteller import config
from storyteller.errors import StorytellerError, TopicRefusedError
from storyteller.notify import notify, watchdog_interval
from storyteller.voice import asr, audio, button, tts
from storyteller.voice.commands import Grammar

IDLE, LISTENING, GENERATING, SPEAKING = "idle", "listening", "generating", "speaking"
REOPEN_S = 1.0  # a microphone that went away is looked for again this often
TICK_S = 0.5  # the main loop wakes at least this often
STALE_MIN_S = 2.0  # a thread silent for this long (or a watchdog interval, if longer) is hung
MAX_REQUEST = 256  # bytes of one control request
VOLUME_STEP, VOLUME_MAX = 25, 200


def default_socket() -> Path:
    """/run/storyteller/ (systemd's RuntimeDirectory) when it exists, else the user's runtime folder."""
    run = Path("/run/storyteller")
    if run.is_dir() and os.access(run, os.W_OK):
        return run / "control.sock"
    return Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/storyteller-{os.getuid()}") / "storyteller.sock"


@dataclass
class Options:
    input: str = "default"
    output: str = "default"
    socket: Path = field(default_factory=default_socket)
    recognizer: str = "pocketsphinx"
    recognizer_model: Path | None = None
    gpio_chip: str = "gpiochip0"
    gpio_line: int = -1  # -1: no button
    volume: int = 100
    voice: str | None = "en-us"
    commands: Path = field(default_factory=lambda: config.data_file("commands.txt"))
    topics: Path = field(default_factory=lambda: config.data_file("topics.txt"))
    quiet_hours: str = ""  # "HH:MM-HH:MM"
    bedtime_sentences: int = 5


GOOD_NIGHT = "It is time to sleep now. Good night."


def in_quiet_hours(hours: str, now: datetime.datetime) -> bool:
    """True when `now` falls in "HH:MM-HH:MM" (which may run past midnight)."""
    if not hours:
        return False
    start, end = ((int(t[:2]) * 60 + int(t[3:])) for t in hours.split("-"))
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start <= end else minute >= start or minute < end


# Events the journal shows as errors and warnings (sd-daemon(3) priorities); the rest are info.
JOURNAL_PRIORITY = {"error": 3, "button-error": 3, "warning": 4, "input-gone": 4, "input-missing": 4}


def writes_to_journal(out: TextIO) -> bool:
    """Whether `out` is the journal's stream systemd gave this service ($JOURNAL_STREAM is
    its device:inode)."""
    try:
        st = os.fstat(out.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (io.UnsupportedOperation too)
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


class Log:
    """One line per event on a stream (the journal when run by systemd), with the monotonic
    clock's time, so a test or scripts/bench-robot can tell when things happened. Into the
    journal each line starts with its priority ("<3>" an error), which journald takes off and
    keeps, so `journalctl -p warning -u storyteller` shows what went wrong."""

    def __init__(self, out: TextIO) -> None:
        self._out, self._lock = out, threading.Lock()
        self._journal = writes_to_journal(out)

    def __call__(self, event: str, detail: str = "") -> None:
        priority = f"<{JOURNAL_PRIORITY.get(event, 6)}>" if self._journal else ""
        with self._lock:  # CLOCK_MONOTONIC: the same clock in every process of this machine
            self._out.write(f"{priority}{time.monotonic():.3f} {event}{' ' + detail if detail else ''}\n")
            self._out.flush()


class Teller:
    """Model, tokenizer and session, opened once; tell() streams a topic's sentences. Imports
    the engine only here, so the rest of the robot starts without it."""

    def __init__(self, settings: config.Settings, model: Path | None, tokenizer: Path | None) -> None:
        from storyteller import models
        from storyteller.engine import Model, Tokenizer
        from storyteller.errors import ModelNotFoundError
        from storyteller.safety import Blocklist
        from storyteller.story import StoryOptions, Storyteller

        dirs = [f.path for f in models.search_dirs(settings.model.models_dir)]
        mpath = model or settings.model.path or models.default_model(dirs)
        if not mpath.is_file():
            raise ModelNotFoundError(f"model file {mpath} not found (storyteller models fetch stories15M)")
        tpath = tokenizer or settings.model.tokenizer or models.default_tokenizer(mpath, dirs)
        if not tpath.is_file():
            raise ModelNotFoundError(f"tokenizer file {tpath} not found")
        self.model = Model.open(mpath)
        self.tokenizer = Tokenizer.open(tpath)
        kv = None if settings.model.kv == "auto" else settings.model.kv
        self.session = self.model.session(self.tokenizer, context=settings.model.context, kv=kv,
                                          kernels=settings.model.kernels or None)
        s, g = settings.story, settings.generation
        options = StoryOptions(max_sentences=s.max_sentences, temperature=g.temperature, top_p=g.top_p,
                               seed=g.seed, retries=s.retries, max_topic_chars=s.max_topic_chars,
                               closing=s.closing)
        self._teller = Storyteller(self.session, Blocklist.load(settings.safety.blocklist), options)
        self._options = options

    def tell(self, topic: str, max_sentences: int | None = None) -> Iterator[str]:
        """The story's sentences; max_sentences replaces the settings' budget (bedtime)."""
        o = self._options
        self._teller.options = dataclasses.replace(o, max_sentences=min(max_sentences or o.max_sentences,
                                                                        o.max_sentences))
        return (s.text for s in self._teller.tell(topic))

    def cancel(self) -> None:
        self._teller.cancel()


class Robot:
    def __init__(self, options: Options, open_teller: Callable[[], Teller], log: Log,
                 open_line: Callable[[str, int], button.Line] = button.open_line) -> None:
        self.o, self.log = options, log
        self._open_line = open_line  # the button's GPIO line (a test gives a simulated one)
        self.grammar = Grammar.load(options.commands, options.topics)
        self.state = IDLE
        self._problems: dict[str, str] = {}  # "model", "input": what is wrong, for status
        self.volume = options.volume
        self.last_topic: str | None = None
        self.events: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_teller = open_teller
        self._teller: Teller | None = None
        self._teller_error: str | None = None
        self._story: threading.Thread | None = None
        self._sink: tts.Sink | None = None
        self._next_sink: tts.Sink | None = None  # opened ahead for the next story
        self._lock = threading.Lock()  # state, _sink, _story
        self._quit = threading.Event()
        self._beats: dict[str, float] = {}  # thread name -> last sign of life
        self._rng = random.Random()
        self._mic = False  # an input is open
        self._bedtime_told = False  # the night's story has been told (quiet hours)
        self._cancelled = threading.Event()  # stop() during the current story

    # ------------------------------------------------------------------ threads

    def _beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def _listen(self) -> None:
        """Microphone → recognizer → commands. A microphone that goes away is opened again
        every REOPEN_S; a WAV file that ends leaves the robot idle (still obeying the socket)."""
        try:
            rec = asr.open_recognizer(self.o.recognizer, self.grammar, self.o.recognizer_model)
        except StorytellerError as e:
            self.log("error", f"no speech recognition: {e}")
            self._beats.pop("listener", None)
            return
        told_gone = False
        while not self._quit.is_set():
            self._beat("listener")
            try:
                source = audio.open_source(self.o.input, rec.rate)
            except audio.AudioInputError as e:
                if not told_gone:
                    self.log("input-missing", str(e))
                    told_gone = True
                self._problem("input", f"no microphone: {e}")
                self._quit.wait(REOPEN_S)
                continue
            told_gone = False
            self._problem("input", None)
            self._mic = True
            self.log("input-open", self.o.input)
            self._enter(LISTENING, only_from=(IDLE,))
            try:
                with source:
                    while not self._quit.is_set():
                        self._beat("listener")
                        chunk = source.read()
                        if not chunk:
                            break
                        if (text := rec.accept(chunk)) is not None:
                            self._heard(text)
                    if not self._quit.is_set() and (text := rec.flush()) is not None:
                        self._heard(text)
            except audio.MicrophoneGoneError as e:
                self._mic = False
                self.log("input-gone", str(e))
                self._enter(IDLE, only_from=(LISTENING,))
                continue
            self._mic = False
            if self.o.input.startswith("wav:"):
                self.log("input-end", self.o.input)
                self._enter(IDLE, only_from=(LISTENING,))
                self._beats.pop("listener", None)  # done, not hung
                return

    def _heard(self, text: str) -> None:
        self.log("heard", text)
        command = self.grammar.parse(text)
        if command is not None:
            self.events.put((command.name, command.topic))

    def _serve(self, server: socket.socket) -> None:
        """One request per connection: "say TOPIC", "stop", "status"; one line back."""
        server.settimeout(TICK_S)
        while not self._quit.is_set():
            self._beat("control")
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    data = conn.recv(MAX_REQUEST)
                    conn.sendall((self._request(data) + "\n").encode("utf-8"))
                except OSError:
                    pass

    def _request(self, data: bytes) -> str:
        try:
            verb, _, arg = data.decode("utf-8").strip().partition(" ")
        except UnicodeDecodeError:
            return "error: not UTF-8"
        self.log("control", verb)
        if verb == "say" and arg.strip():
            self.events.put(("say", arg.strip()))
            return "ok"
        if verb == "stop":
            self.events.put(("stop", None))
            return "ok"
        if verb == "status":
            return f"{self.state}: {self.status}"
        return "error: say TOPIC | stop | status"

    def _tell(self, topic: str | None, bedtime: bool) -> None:
        """The teller thread: one story, each sentence spoken as soon as it is complete (at
        bedtime a short one, then good night; topic None: only good night)."""
        teller, sink = self._teller, self._sink
        assert teller is not None and sink is not None
        self.log("story", f"topic={topic!r}{' (bedtime)' if bedtime else ''}")
        sink.on_spoken = lambda k: self.log("spoken", str(k))  # handed to the speaker or written
        n = 0
        try:
            story = teller.tell(topic, self.o.bedtime_sentences if bedtime else None) if topic else iter(())
            for sentence in itertools.chain(story, [GOOD_NIGHT] if bedtime else []):
                if n == 0:
                    if topic:
                        self.log("prompt", sentence)  # the opening made from the topic: the model starts from it
                    self._enter(SPEAKING, only_from=(GENERATING,))
                n += 1
                self.log("sentence", sentence)
                sink.say(sentence)
            if self._cancelled.is_set():
                self.log("cancelled", f"after {n} sentences")
                return
            self.log("generation-end", f"{n} sentences")
            sink.close()
            if self._cancelled.is_set():
                self.log("cancelled", f"while speaking, {len(sink.spoken)} sentences spoken")
                return
            self.log("told", f"{len(sink.spoken)} sentences spoken, speech restarts={sink.restarts}")
        except TopicRefusedError as e:
            self.log("refused", e.refusal)
            sink.say(e.refusal)
            sink.close()
        except tts.SpeechError as e:
            self.log("error", f"speech: {e}")
            teller.cancel()
        except StorytellerError as e:
            self.log("error", f"story: {e}")
            sink.stop()
        finally:
            with self._lock:
                if self._sink is sink:
                    self._sink = None
            self.events.put(("told", None))

    def _press(self) -> None:
        self.events.put(("button", None))

    # ------------------------------------------------------------------ state

    def _enter(self, state: str, only_from: tuple[str, ...] | None = None) -> None:
        with self._lock:
            if only_from is not None and self.state not in only_from:
                return
            if state != self.state:
                self.state = state
                self.log("state", state)
                notify(f"STATUS={state}: {self.status}")

    @property
    def status(self) -> str:
        return "; ".join(self._problems.values()) or "ready"

    def _problem(self, part: str, text: str | None) -> None:
        if self._problems.get(part) != text:
            if text is None:
                self._problems.pop(part, None)
            else:
                self._problems[part] = text
            notify(f"STATUS={self.state}: {self.status}")

    def _busy(self) -> bool:
        return self._story is not None and self._story.is_alive()

    def _rest_state(self) -> str:
        return LISTENING if self._mic else IDLE

    def _start_story(self, topic: str | None) -> None:
        if self._busy():
            self.stop()
        if self._teller is None:
            self.log("error", f"no story: {self._teller_error}")
            return
        topic = topic or self._rng.choice(self.grammar.topics)
        self.last_topic = topic
        bedtime = in_quiet_hours(self.o.quiet_hours, datetime.datetime.now())
        if bedtime and self._bedtime_told:
            topic = None  # one story a night: now only good night
        self._bedtime_told = bedtime
        with self._lock:
            sink, self._next_sink = self._next_sink, None
        try:
            sink = sink or self._open_sink()
        except tts.SpeechError as e:
            self.log("error", f"speech: {e}")
            return
        with self._lock:
            self._sink = sink
        self._cancelled.clear()
        self._enter(GENERATING)
        self._story = threading.Thread(target=self._tell, args=(topic, bedtime), name="storyteller-teller",
                                       daemon=True)
        self._story.start()

    def _open_sink(self) -> tts.Sink:
        out = self.o.output
        if out.startswith("wav:"):
            return tts.open_sink(speak=False, wav=out[4:], voice=self.o.voice, volume=self.volume)
        return tts.open_sink(speak=True, wav=None, voice=self.o.voice, volume=self.volume,
                             device=None if out == "default" else out)

    def _prepare_sink(self) -> None:
        """Opens the next story's speaker ahead, in a thread: espeak-ng's start-up checks take
        0.1-2 s, which a request would otherwise wait for. Not for a WAV file (opening it
        would empty the last story's)."""
        if self.o.output.startswith("wav:"):
            return

        def work() -> None:
            try:
                sink = self._open_sink()
            except tts.SpeechError as e:
                self.log("error", f"speech: {e}")
                return
            with self._lock:
                if self._next_sink is None and not self._quit.is_set():
                    self._next_sink, sink = sink, None
            if sink is not None:
                sink.stop()
        threading.Thread(target=work, name="storyteller-sink", daemon=True).start()

    def _drop_next_sink(self) -> None:
        with self._lock:
            sink, self._next_sink = self._next_sink, None
        if sink is not None:
            sink.stop()

    def stop(self) -> float:
        """Silences the story now (any state): the speech processes are killed, the model
        stops before its next token. Returns the seconds it took."""
        t = time.monotonic()
        with self._lock:
            sink = self._sink
        if self._teller is not None and self._busy():
            self._cancelled.set()
            self._teller.cancel()
        if sink is not None:
            sink.stop()
        took = time.monotonic() - t
        self.log("stopped", f"{1000 * took:.1f} ms")
        self._enter(self._rest_state())
        return took

    def handle(self, event: str, arg: str | None) -> None:
        self.log("event", f"{event} {arg or ''}".strip())
        if event in ("story", "another") and self._busy():  # spoken while a story is told
            self.log("ignored", "a story is being told: only stop, louder, quieter")  # or it obeys its own voice
        elif event == "stop":
            self.stop()
        elif event in ("story", "say"):
            self._start_story(arg)
        elif event == "another":
            self._start_story(self.last_topic)
        elif event == "button":
            if self._busy():
                self.stop()
            else:
                self._start_story(None)
        elif event in ("louder", "quieter"):
            step = VOLUME_STEP if event == "louder" else -VOLUME_STEP
            self.volume = max(0, min(VOLUME_MAX, self.volume + step))
            self.log("volume", str(self.volume))  # from the next sentence on
            with self._lock:
                for sink in (self._sink, self._next_sink):
                    if sink is not None:
                        sink.set_volume(self.volume)
        elif event == "told":
            if not self._busy():
                self._enter(self._rest_state())
            self._prepare_sink()

    def healthy(self, stale_s: float = STALE_MIN_S) -> bool:
        """The listener and the control socket have shown life within stale_s (the teller is
        not watched: a prompt may take seconds on the board, and stop() cancels it anyway)."""
        now = time.monotonic()
        return all(now - t < stale_s for t in self._beats.values())

    # ------------------------------------------------------------------ main

    def run(self) -> int:
        server = _control_socket(self.o.socket)
        self.log("socket", str(self.o.socket))
        try:
            self._teller = self._open_teller()
        except StorytellerError as e:
            self._teller_error = str(e)
            self.log("error", f"model: {e}")
            self._problem("model", f"no model: {e}")
        threads = [threading.Thread(target=self._listen, name="storyteller-listener", daemon=True),
                   threading.Thread(target=self._serve, args=(server,), name="storyteller-control", daemon=True)]
        self._beat("listener")
        self._beat("control")
        press = None
        if self.o.gpio_line >= 0:
            try:
                press = button.Button(self._open_line(self.o.gpio_chip, self.o.gpio_line), self._press,
                                      on_error=lambda e: self.log("button-error", str(e)))
            except button.ButtonError as e:
                self.log("warning", f"no button: {e}")  # once: the robot runs without it
        for t in threads:
            t.start()
        self._prepare_sink()
        notify(f"READY=1\nSTATUS={self.state}: {self.status}")
        self.log("ready", self.status)
        ping = watchdog_interval()
        next_ping = 0.0
        try:
            while not self._quit.is_set():
                try:
                    event, arg = self.events.get(timeout=min(TICK_S, ping or TICK_S))
                    self.handle(event, arg)
                except queue.Empty:
                    pass
                if ping is not None and self.healthy(max(STALE_MIN_S, ping)) and time.monotonic() >= next_ping:
                    notify("WATCHDOG=1")
                    next_ping = time.monotonic() + ping
        except KeyboardInterrupt:
            pass
        finally:
            self._quit.set()
            notify("STOPPING=1")
            self.stop()
            self._drop_next_sink()
            if press is not None:
                press.close()
            server.close()
            self.o.socket.unlink(missing_ok=True)
        return 0

    def quit(self) -> None:
        self._quit.set()


def _control_socket(path: Path) -> socket.socket:
    """A Unix stream socket at `path`, mode 0660 (the owner and group audio), replacing a
    stale one but never anything that is not a socket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o117)  # never world-accessible, not even between bind and chmod
    try:
        s.bind(str(path))
    except OSError as e:
        s.close()
        raise StorytellerError(f"cannot listen on {path}: {e.strerror or e}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    s.listen(4)
    return s


def request(path: Path, text: str, timeout: float = 5.0) -> str:
    """Sends one request to a running daemon and returns its one-line answer."""
    data = text.encode("utf-8")
    if len(data) > MAX_REQUEST:
        raise StorytellerError(f"the request is longer than {MAX_REQUEST} bytes")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(data)
            return s.recv(4096).decode("utf-8", "replace").strip()
        except OSError as e:
            raise StorytellerError(f"no storyteller daemon at {path} ({e.strerror or e}): "
                                   "start it with `storyteller daemon`") from None


def listen_once(request_wav: Path, story_wav: Path, open_teller: Callable[[], Teller], options: Options,
                out: TextIO) -> int:
    """`storyteller listen`: one spoken request from a file, its story into a WAV file."""
    grammar = Grammar.load(options.commands, options.topics)
    rec = asr.open_recognizer(options.recognizer, grammar, options.recognizer_model)
    heard: list[str] = []
    with audio.WavSource(request_wav, rec.rate) as src:
        silence = [bytes(2 * int(rec.rate * audio.CHUNK_S))] * int(1.0 / audio.CHUNK_S)  # the pause after it
        for chunk in [*iter(src.read, b""), *silence]:
            if (text := rec.accept(chunk)) is not None:
                heard.append(text)
    if (text := rec.flush()) is not None:
        heard.append(text)
    commands = [c for h in heard if (c := grammar.parse(h)) is not None]
    out.write(f"heard: {' / '.join(heard) or '(nothing)'}\n")
    story = next((c for c in commands if c.name in ("story", "another")), None)
    if story is None:
        out.write("no story was asked for\n")
        return 1
    topic = story.topic or random.choice(grammar.topics)
    teller = open_teller()
    with tts.open_sink(speak=False, wav=story_wav, voice=options.voice, volume=options.volume) as sink:
        for sentence in teller.tell(topic):
            out.write(sentence + " ")
            out.flush()
            sink.say(sentence)
    out.write("\n")
    return 0


# ----------------------------------------------------------------------------- command line


def add_commands(sub: Any, common: argparse.ArgumentParser, files: argparse.ArgumentParser) -> None:
    """`daemon`, `listen`, `say`, `stop`, `status` on the storyteller command line (cli.py)."""
    voice = argparse.ArgumentParser(add_help=False)
    # every default comes from the settings' [voice] (etc/storyteller.toml)
    voice.add_argument("--recognizer", choices=("pocketsphinx", "vosk"), help="default pocketsphinx")
    voice.add_argument("--recognizer-model", metavar="DIR", help="Vosk's model folder (default: vosk-small-en)")
    voice.add_argument("--voice", help="espeak-ng voice (default en-us)")
    voice.add_argument("--volume", type=int, choices=range(0, 201), metavar="0-200",
                       help="percent of espeak-ng's loudness (default 100)")
    sock = argparse.ArgumentParser(add_help=False)
    sock.add_argument("--socket", metavar="PATH", help=f"control socket (default {default_socket()})")

    d = sub.add_parser("daemon", parents=[common, files, voice, sock], help="run the robot")
    d.add_argument("--input", help="default | wav:FILE | device name or index (default: default)")
    d.add_argument("--output", help="default | wav:FILE | NAME: a sound server's sink or an ALSA device "
                   "(default: default)")
    d.add_argument("--gpio-chip", help="default gpiochip0")
    d.add_argument("--gpio-line", type=int, help="the button's line (default -1: no button)")
    d.set_defaults(func=_cmd_daemon)
    listen = sub.add_parser("listen", parents=[common, files, voice], help="one spoken request, file to file")
    listen.add_argument("--wav", required=True, metavar="REQUEST.wav")
    listen.add_argument("--speak-wav", required=True, metavar="STORY.wav")
    listen.set_defaults(func=_cmd_listen)
    say = sub.add_parser("say", parents=[sock], help="ask the running daemon for a story")
    say.add_argument("topic", nargs="+")
    say.set_defaults(func=lambda a: _cmd_request(a, "say " + " ".join(a.topic)))
    for name in ("stop", "status"):
        p = sub.add_parser(name, parents=[sock], help=f"{name} (the running daemon)")
        p.set_defaults(func=lambda a, name=name: _cmd_request(a, name))


def _options(args: argparse.Namespace) -> Options:
    """The settings' [voice], each value given on the command line replacing it."""
    settings = config.load(config.find_config(args.config))
    v = settings.voice
    o = Options(input=v.input, output=v.output, recognizer=v.recognizer, recognizer_model=v.recognizer_model,
                gpio_chip=v.gpio_chip, gpio_line=v.gpio_line, volume=v.volume, voice=v.voice or None,
                commands=v.commands, topics=v.topics, quiet_hours=v.quiet_hours,
                bedtime_sentences=v.bedtime_sentences)
    for key in ("input", "output", "recognizer", "gpio_chip", "gpio_line", "volume", "voice"):
        if getattr(args, key, None) is not None:
            setattr(o, key, getattr(args, key))
    if args.recognizer_model:
        o.recognizer_model = Path(args.recognizer_model)
    if o.recognizer == "vosk" and o.recognizer_model is None:  # the one `models fetch vosk-small-en` put there
        from storyteller import models

        o.recognizer_model = models.find_archive("vosk-small-en", [
            f.path for f in models.search_dirs(settings.model.models_dir)])
    if getattr(args, "socket", None):
        o.socket = Path(args.socket)
    return o


def _opener(args: argparse.Namespace) -> Callable[[], Teller]:
    settings = config.load(config.find_config(args.config))
    model = Path(args.model) if args.model else None
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    return lambda: Teller(settings, model, tokenizer)


def _cmd_daemon(args: argparse.Namespace) -> int:
    import signal

    robot = Robot(_options(args), _opener(args), Log(sys.stderr))
    signal.signal(signal.SIGTERM, lambda *_: robot.quit())
    return robot.run()


def _cmd_listen(args: argparse.Namespace) -> int:
    return listen_once(Path(args.wav), Path(args.speak_wav), _opener(args), _options(args), sys.stdout)


def _cmd_request(args: argparse.Namespace, text: str) -> int:
    answer = request(Path(args.socket) if args.socket else default_socket(), text)
    print(answer)
    return 0 if not answer.startswith("error") else 1
