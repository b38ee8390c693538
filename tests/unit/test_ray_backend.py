"""What a Ray node is told: the driver's profile, rubric, seed and base-image sources, exactly as
resolved on the driver (archives, mirrors, order, no stand-ins, pull timeout)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from grader.cli.main import _image_sources, _parser
from grader.cli.ray_backend import TaskOptions, node_commands
from grader.domain.settings import Settings

SOURCES = {
    "order": ["local", "archives", "mirrors"],
    "mirrors": ["127.0.0.1:5000", "mirror.example.edu/prefix"],
    "archives": ["/srv/images", "/srv/more images"],
    "pull_timeout_s": 42.5,
}


def _options(sources: dict[str, object] | None, seed: int | None = 7) -> TaskOptions:
    return TaskOptions(
        profile="offline",
        rubric_text=None,
        gpus="none",
        image_sources_json=None if sources is None else json.dumps(sources),
        cpus=2,
        memory_mb=1024,
        wants_gpu=False,
        seed=seed,
    )


def test_a_node_grades_with_the_drivers_sources_and_builds_no_stand_ins_it_may_not_use(tmp_path):
    setup, grade = node_commands(tmp_path / "alice", tmp_path / "r", None, _options(SOURCES))
    assert setup == [sys.executable, "-m", "grader", "setup", "--profile", "offline",
                     "--no-standins"]  # fmt: skip
    given = grade[grade.index("--image-sources-json") + 1]
    assert json.loads(given) == SOURCES
    assert grade[:4] == [sys.executable, "-m", "grader", "grade"]
    assert grade[4] == str(tmp_path / "alice")
    for option, value in (("--seed", "7"), ("--profile", "offline"), ("--gpus", "none"),
                          ("--report-dir", str(tmp_path / "r")), ("-j", "1")):  # fmt: skip
        assert grade[grade.index(option) + 1] == value
    assert "--force" in grade and "--rubric" not in grade


def test_stand_ins_in_the_drivers_sources_are_prepared_on_the_node(tmp_path):
    sources = {**SOURCES, "order": ["local", "standins"]}
    rubric = tmp_path / "rubric.toml"
    setup, grade = node_commands(tmp_path / "a", tmp_path / "r", rubric, _options(sources, None))
    assert "--no-standins" not in setup
    assert grade[grade.index("--rubric") + 1] == str(rubric)
    assert "--seed" not in grade


def test_the_grade_command_takes_resolved_sources_as_they_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a configuration in the working folder that would otherwise be read and merged
    (tmp_path / "grader.toml").write_text('[images]\nmirrors = ["elsewhere.example"]\n')
    args = _parser().parse_args(["grade", "x", "--image-sources-json", json.dumps(SOURCES)])
    args.settings = Settings.from_env()
    sources = _image_sources(args)
    assert sources.order == ("local", "archives", "mirrors")
    assert sources.mirrors == ("127.0.0.1:5000", "mirror.example.edu/prefix")
    assert sources.archives == (Path("/srv/images"), Path("/srv/more images"))
    assert sources.pull_timeout_s == 42.5


def test_the_resolved_sources_option_is_not_advertised():
    assert "--image-sources-json" not in _parser().format_help()
    grade = _parser()._subparsers._group_actions[0].choices["grade"]  # type: ignore[union-attr]
    assert "--image-sources-json" not in grade.format_help()


def test_a_private_copy_with_a_link_out_reaches_the_node_as_it_is(tmp_path):
    from grader.cli.ray_backend import pack, unpack
    from grader.domain.intake import stage

    handed_in = tmp_path / "alice"
    (handed_in / "train").mkdir(parents=True)
    (handed_in / "train" / "Dockerfile").write_text("FROM x\n")
    (handed_in / "train" / "host").symlink_to("/etc")  # out of the hand-in
    (handed_in / "serve").symlink_to("train")  # inside it
    private = stage(handed_in, tmp_path / "staged")
    on_node = unpack(pack(private), tmp_path / "node")
    assert on_node == tmp_path / "node" / "alice"
    assert (on_node / "train" / "Dockerfile").read_text() == "FROM x\n"
    assert os.readlink(on_node / "serve") == "train"
    assert os.readlink(on_node / "train" / "host") == os.readlink(private / "train" / "host")
    assert not (on_node / "train" / "host").exists()  # leads nowhere, as on the driver
