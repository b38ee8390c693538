"""Where base images come from: the configuration file, the command line over it, its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.domain.dockerfile import image_name
from grader.domain.errors import ConfigError
from grader.domain.settings import Settings
from grader.engine.baseimages import SOURCES, ImageSources, load_image_sources, mirror_reference

SETTINGS = Settings(home=Path("/nonexistent"), docker_host=None, pull_timeout_s=77)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grader.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = load_image_sources(None, SETTINGS)
    assert sources.order == SOURCES and sources.mirrors == () and sources.standins
    assert sources.pull_timeout_s == 77  # the environment's, without a file saying otherwise


def test_the_file_in_the_working_folder_is_read(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    _config(tmp_path, '[images]\nsources = ["local", "mirrors", "archives"]\n'
            'mirrors = ["mirror.example.edu/", "127.0.0.1:5000"]\narchives = ["images"]\n'
            "pull_timeout_seconds = 20\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    sources = load_image_sources(None, SETTINGS)
    assert sources.order == ("local", "mirrors", "archives")
    assert sources.mirrors == ("mirror.example.edu", "127.0.0.1:5000")
    assert sources.archives == ((tmp_path / "images").resolve(),)
    assert sources.pull_timeout_s == 20 and not sources.standins


def test_the_command_line_goes_over_the_file(tmp_path):
    path = _config(tmp_path, '[images]\nmirrors = ["a.example.edu"]\nstandins = true\n')
    sources = load_image_sources(
        path, SETTINGS, order="mirrors,standins,local", mirrors=["b.example.edu"], standins=False
    )
    assert sources.order == ("mirrors", "local")
    assert sources.mirrors == ("a.example.edu", "b.example.edu")
    assert ImageSources.from_json(sources.to_json()) == sources


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[imagez]\n", "imagez: unknown key; allowed here: images"),
        (
            "[images]\nmirror = []\n",
            "images.mirror: unknown key; allowed here: archives, mirrors, "
            "pull_timeout_seconds, sources, standins",
        ),
        (
            '[images]\nsources = ["local", "cloud"]\n',
            'images.sources[1]: must be one of "archives", "local", "mirrors", "registry", '
            "\"standins\", got 'cloud'",
        ),
        (
            '[images]\nsources = ["local", "local"]\n',
            "images.sources: a source is named twice; name each once",
        ),
        (
            '[images]\nmirrors = "m.example.edu"\n',
            "images.mirrors: must be a list of non-empty strings, got 'm.example.edu'",
        ),
        (
            '[images]\nmirrors = ["a.example.edu", ""]\n',
            "images.mirrors[1]: must be a non-empty string, got ''",
        ),
        ("[images]\nstandins = 1\n", "images.standins: must be true or false, got 1"),
        (
            "[images]\npull_timeout_seconds = 0\n",
            "images.pull_timeout_seconds: must be a number above 0, got 0",
        ),
        ('images = "all"\n', "images: must be a table, got 'all'"),
    ],
)
def test_configuration_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_image_sources(path, SETTINGS)
    assert str(error.value) == f"{path}: {message}"


def test_configuration_errors_are_one_line(tmp_path):
    path = _config(tmp_path, "[images\n")
    with pytest.raises(ConfigError) as error:
        load_image_sources(path, SETTINGS)
    assert str(error.value).startswith(f"{path}: not valid TOML")
    assert "\n" not in str(error.value)
    _config(tmp_path, '[images]\narchives = ["nowhere"]\n')
    with pytest.raises(ConfigError, match=r"image archives folder .*nowhere does not exist"):
        load_image_sources(path, SETTINGS)


def test_a_named_file_must_exist(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_image_sources(tmp_path / "missing.toml", SETTINGS)
    assert str(error.value) == f"{tmp_path / 'missing.toml'}: no such configuration file"


def test_mirror_names():
    assert mirror_reference("127.0.0.1:5000", image_name("alpine")) == (
        "127.0.0.1:5000/library/alpine:latest"
    )
    assert mirror_reference("m.example.edu/hub/", image_name("pytorch/pytorch:2.1")) == (
        "m.example.edu/hub/pytorch/pytorch:2.1"
    )
