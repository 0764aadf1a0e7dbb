"""Settings (storyteller.config): etc/storyteller.toml documents the defaults, where the file
is looked for, paths relative to it, one-line errors for bad files."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from native import REPO_ROOT

from storyteller import config
from storyteller.errors import ConfigError

ETC = REPO_ROOT / "etc" / "storyteller.toml"


def test_the_shipped_file_holds_the_defaults() -> None:
    s = config.load(ETC)
    d = config.Settings()
    for section in ("generation", "story"):
        assert getattr(s, section) == getattr(d, section)
    for f in fields(config.ModelSettings):
        if f.name != "models_dir":
            assert getattr(s.model, f.name) == getattr(d.model, f.name), f.name
    assert s.model.models_dir.resolve() == (REPO_ROOT / "models").resolve()
    assert s.safety.blocklist.resolve() == config.data_file("blocklist.txt").resolve()
    assert s.source == ETC


def test_every_setting_is_in_the_shipped_file() -> None:
    text = ETC.read_text()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in text
        for f in fields(cls):
            assert f"\n{f.name} = " in text, f"[{section}] {f.name} is not documented in {ETC}"


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "s.toml"
    f.write_text('[model]\npath = "m/x.l2"\ntokenizer = "/abs/tok.bin"\nmodels_dir = "../models"\n'
                 '[safety]\nblocklist = "words.txt"\n[generation]\ntemperature = 1\nseed = 7\n')
    s = config.load(f)
    assert s.model.path == tmp_path / "conf" / "m" / "x.l2"
    assert s.model.tokenizer == Path("/abs/tok.bin")
    assert s.model.models_dir == tmp_path / "models"
    assert s.safety.blocklist == tmp_path / "conf" / "words.txt"
    assert s.generation.temperature == 1.0 and isinstance(s.generation.temperature, float)
    assert s.generation.seed == 7 and s.generation.top_p == 0.9  # missing keys keep defaults


@pytest.mark.parametrize(("text", "message"), [
    ("[model]\npaht = 'x'\n", r"unknown setting \[model\] paht"),
    ("[sound]\nx = 1\n", r"unknown section \[sound\]"),
    ("[generation]\ntemperature = 'hot'\n", r"\[generation\] temperature .* must be a float"),
    ("[story]\nmax_sentences = 2.5\n", r"\[story\] max_sentences .* must be a int"),
    ("[story]\nretries = true\n", r"must be a int"),
    ("[model]\nkv = 'f8'\n", r"kv .* must be auto, f32 or f16"),
    ("[model]\npath = 3\n", r"must be a string"),
    ("[model\n", r"not valid TOML"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        config.load(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_where_the_file_is_looked_for(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("")
    b.write_text("")
    assert config.find_config(a, {"STORYTELLER_CONFIG": str(b)}, tmp_path) == a
    assert config.find_config(None, {"STORYTELLER_CONFIG": str(b)}, tmp_path) == b
    with pytest.raises(ConfigError, match="not found"):
        config.find_config(tmp_path / "none.toml", {}, tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        config.find_config(None, {"STORYTELLER_CONFIG": str(tmp_path / "none.toml")}, tmp_path)
    (tmp_path / "etc").mkdir()
    local = tmp_path / "etc" / "storyteller.toml"
    local.write_text("")
    assert config.find_config(None, {}, tmp_path) == local
    empty = tmp_path / "empty"
    empty.mkdir()
    found = config.find_config(None, {}, empty)
    assert found is None or found == config.SYSTEM_CONFIG
    assert config.load(None) == config.Settings()


def test_story_options_come_from_the_settings_whole() -> None:
    """One copy of the story fields: [story] and [generation] become StoryOptions by name, and
    only the overrides given (not None) replace them."""
    from storyteller.config import GenerationSettings, StorySettings
    from storyteller.story import StoryOptions

    story, generation = StorySettings(max_sentences=4, retries=1, closing=""), GenerationSettings(top_p=0.5, seed=9)
    o = StoryOptions.from_settings(story, generation, temperature=None, seed=3)
    assert (o.max_sentences, o.retries, o.closing, o.top_p, o.temperature, o.seed) == (4, 1, "", 0.5, 0.8, 3)
    assert o.max_topic_chars == story.max_topic_chars
