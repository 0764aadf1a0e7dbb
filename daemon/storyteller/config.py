"""Settings: frozen dataclasses, one per section of etc/storyteller.toml.

The file is optional and so is every key in it; the defaults below are the ones that file
documents (a test keeps the two equal). Relative paths in a file are relative to the
folder holding it. Command-line options override the file (cli.py).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from storyteller.errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parents[1]
SYSTEM_CONFIG = Path("/etc/storyteller/storyteller.toml")


def data_file(name: str) -> Path:
    """A default data file: the copy installed in the package (storyteller/data/), else the
    source tree's (etc/NAME, models/manifest.toml)."""
    installed = _PACKAGE_DIR / "data" / name
    if installed.is_file():
        return installed
    return _SOURCE_ROOT / ("models" if name == "manifest.toml" else "etc") / name


@dataclass(frozen=True)
class ModelSettings:
    """[model]: which model, tokenizer and session."""

    path: Path | None = None  # None: the first model found in the model folders (models.search_dirs)
    tokenizer: Path | None = None  # None: the model's tokenizer from the manifest, else tokenizer.bin
    models_dir: Path | None = None  # searched first, and where fetch writes; None: the per-user folder
    kv: str = "auto"  # "f32", "f16", "auto" (l2run's: f16 for packed f16/q8 models)
    context: int = 0  # positions per story, 0 = the model's seq_len
    kernels: str = ""  # "" = the fastest this CPU runs


@dataclass(frozen=True)
class GenerationSettings:
    """[generation]: sampling."""

    temperature: float = 0.8
    top_p: float = 0.9
    seed: int = 0  # 0 = a new seed every time


@dataclass(frozen=True)
class StorySettings:
    """[story]: story shape."""

    max_sentences: int = 15
    max_topic_chars: int = 80
    retries: int = 3
    closing: str = "The end."


@dataclass(frozen=True)
class SafetySettings:
    """[safety]: the word list of the topic and output filters."""

    blocklist: Path = field(default_factory=lambda: data_file("blocklist.txt"))


@dataclass(frozen=True)
class VoiceSettings:
    """[voice]: the robot (`storyteller daemon`, `listen`): sound, recognition, the button."""

    input: str = "default"  # "default" (PortAudio's), a device name (part of it) or index, "wav:FILE"
    output: str = "default"  # "default" (speak), "wav:FILE", or a sound server's sink / ALSA device name
    recognizer: str = "pocketsphinx"  # or "vosk"
    recognizer_model: Path | None = None  # the model folder; None: PocketSphinx's own, or the fetched vosk-small-en
    voice: str = "en-us"  # espeak-ng's voice
    volume: int = 100  # percent of espeak-ng's loudness, 0-200 ("louder"/"quieter" step 25)
    gpio_chip: str = "gpiochip0"
    gpio_line: int = -1  # the button's line on gpio_chip (sysfs: its number); -1 = no button
    commands: Path = field(default_factory=lambda: data_file("commands.txt"))
    topics: Path = field(default_factory=lambda: data_file("topics.txt"))
    quiet_hours: str = ""  # "HH:MM-HH:MM" (e.g. "19:30-07:00"): bedtime, one short story then good night
    bedtime_sentences: int = 5  # the sentence budget of the bedtime story


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    story: StorySettings = field(default_factory=StorySettings)
    safety: SafetySettings = field(default_factory=SafetySettings)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    source: Path | None = None  # the file these came from


SECTIONS: dict[str, type] = {"model": ModelSettings, "generation": GenerationSettings,
                             "story": StorySettings, "safety": SafetySettings, "voice": VoiceSettings}
_OPTIONAL_PATHS = {"path", "tokenizer", "models_dir", "recognizer_model"}  # "" means "not set"


def find_config(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> Path | None:
    """The settings file: `explicit` (--config), $STORYTELLER_CONFIG, ./etc/storyteller.toml,
    /etc/storyteller/storyteller.toml; None when there is none (defaults apply)."""
    env = os.environ if env is None else env
    for given in (explicit, env.get("STORYTELLER_CONFIG") or None):
        if given is not None:
            path = Path(given)
            if not path.is_file():
                raise ConfigError(f"settings file {path} not found")
            return path
    for path in ((cwd or Path.cwd()) / "etc" / "storyteller.toml", SYSTEM_CONFIG):
        if path.is_file():
            return path
    return None


def _convert(section: str, key: str, default: Any, value: Any, base: Path, where: Path) -> Any:
    where_key = f"[{section}] {key} in {where}"
    if isinstance(default, Path) or key in _OPTIONAL_PATHS:
        if not isinstance(value, str):
            raise ConfigError(f"{where_key} must be a string (a path)")
        if value == "" and key in _OPTIONAL_PATHS:
            return None
        return Path(os.path.normpath(base / Path(value).expanduser()))
    if isinstance(default, bool) or not isinstance(default, int | float | str):
        raise AssertionError(f"unsupported setting type for {where_key}")
    if isinstance(default, float) and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{where_key} must be a {type(default).__name__}, not {value!r}")
    return value


def parse(data: Mapping[str, Any], base: Path, where: Path) -> Settings:
    """Settings from a parsed TOML document (paths relative to `base`)."""
    sections: dict[str, Any] = {}
    for name, table in data.items():
        cls = SECTIONS.get(name)
        if cls is None or not isinstance(table, dict):
            raise ConfigError(f"unknown section [{name}] in {where} (known: {', '.join(SECTIONS)})")
        defaults = cls()
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"unknown setting [{name}] {key} in {where} "
                                  f"(known: {', '.join(sorted(known))})")
            values[key] = _convert(name, key, getattr(defaults, key), value, base, where)
        sections[name] = replace(defaults, **values)
    settings = Settings(**sections, source=where)
    if settings.model.kv not in ("auto", "f32", "f16"):
        raise ConfigError(f"[model] kv in {where} must be auto, f32 or f16")
    if settings.voice.recognizer not in ("pocketsphinx", "vosk"):
        raise ConfigError(f"[voice] recognizer in {where} must be pocketsphinx or vosk")
    if not 0 <= settings.voice.volume <= 200:
        raise ConfigError(f"[voice] volume in {where} must be between 0 and 200")
    if settings.voice.quiet_hours and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d",
                                                       settings.voice.quiet_hours):
        raise ConfigError(f'[voice] quiet_hours in {where} must be "HH:MM-HH:MM" or ""')
    if settings.voice.bedtime_sentences < 1:
        raise ConfigError(f"[voice] bedtime_sentences in {where} must be 1 or more")
    return settings


def load(path: Path | None) -> Settings:
    """The settings of `path` (find_config()'s answer); defaults when None."""
    if path is None:
        return Settings()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the settings file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the settings file {path} is not valid TOML: {e}") from None
    return parse(data, path.resolve().parent, path)
