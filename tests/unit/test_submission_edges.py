"""Edges of reading a submission (SPEC.md §2): manifest keys that must be plain names or relative
paths, links, the size limit at its exact value, defaults, where the digit image is looked for
and what warnings say. Expected values are written from the contract, not read from the code."""

from __future__ import annotations

import re

import pytest

from grader.domain.errors import ManifestError
from grader.domain.submission import discover, is_submission_dir, load_submission, slugify


def make(tmp_path, manifest=None, files=("train/Dockerfile",)):
    root = tmp_path / "alice"
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("FROM alpine\n")
    if manifest is not None:
        (root / "submission.toml").write_text(manifest)
    return root


@pytest.mark.parametrize("name", [".", ".."])
def test_a_model_file_of_dots_is_refused(tmp_path, name):
    root = make(tmp_path, f'[train]\nmodel_file = "{name}"\n')
    with pytest.raises(ManifestError, match="model_file"):
        load_submission(root)


def test_an_absolute_model_path_is_refused(tmp_path):
    root = make(tmp_path, '[serve]\nmodel_path = "/models/m.pt"\n')
    with pytest.raises(ManifestError, match="model_path"):
        load_submission(root)


def test_the_model_path_is_taken_from_the_manifest(tmp_path):
    root = make(tmp_path, '[serve]\nmodel_path = "models/m.pt"\n')
    assert load_submission(root).serve.model_path == "models/m.pt"


def test_paths_are_shown_relative_to_the_submission_when_inside_it(tmp_path):
    submission = load_submission(make(tmp_path))
    assert str(submission.shown(submission.root / "train" / "Dockerfile")) == "train/Dockerfile"
    assert submission.shown(tmp_path / "elsewhere") == tmp_path / "elsewhere"


# Docker's rule for a path component of an image name (distribution/reference grammar)
IMAGE_NAME_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


@pytest.mark.parametrize("text", ["!!!", "", "---", "Alice Smith", "S-01"])
def test_a_slug_is_always_a_valid_image_name_part(text):
    assert IMAGE_NAME_PART.fullmatch(slugify(text))


def test_a_folder_with_only_serve_is_a_submission(tmp_path):
    (tmp_path / "bob" / "serve").mkdir(parents=True)
    assert is_submission_dir(tmp_path / "bob")


def test_a_path_the_system_cannot_look_up_is_no_submission(tmp_path):
    assert not is_submission_dir(tmp_path / ("x" * 300))  # a name longer than any file system's


def test_every_submission_named_is_found(tmp_path):
    first = make(tmp_path)
    second = tmp_path / "bob"
    (second / "train").mkdir(parents=True)
    assert discover([first, second]) == [first, second]


def test_a_file_that_is_not_an_archive_is_named_as_no_submission(tmp_path):
    (tmp_path / "notes.txt").write_text("not a submission")
    with pytest.raises(ManifestError, match=r"notes\.txt: not a submission"):
        discover([tmp_path / "notes.txt"])


def test_a_manifest_linked_inside_the_submission_is_read(tmp_path):
    root = make(tmp_path)
    (root / "config").mkdir()
    (root / "config" / "submission.toml").write_text('[student]\nid = "S-42"\n')
    (root / "submission.toml").symlink_to("config/submission.toml")
    assert load_submission(root).id == "S-42"


def test_a_manifest_of_exactly_the_size_limit_is_read(tmp_path):
    head = '[student]\nid = "S-7"\n'
    text = head + "#" * (100_000 - len(head) - 1) + "\n"
    assert len(text.encode()) == 100_000
    assert load_submission(make(tmp_path, text)).id == "S-7"


def test_a_missing_dockerfile_is_expected_at_the_default_place(tmp_path):
    root = make(tmp_path, files=("README.md",))
    submission = load_submission(root)
    assert submission.train.dockerfile == root / "train" / "Dockerfile"
    assert submission.serve.dockerfile == root / "serve" / "Dockerfile"


def test_a_train_folder_that_links_out_is_refused_naming_the_key(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make(tmp_path, files=("serve/Dockerfile",))
    (root / "train").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"train\.context"):
        load_submission(root)


def test_a_dockerfile_reached_through_a_folder_outside_is_refused_naming_the_key(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make(tmp_path, '[train]\ndockerfile = "out/link"\n', files=("Dockerfile",))
    (root / "out").symlink_to(outside)
    (outside / "link").symlink_to(root / "Dockerfile")  # back inside
    with pytest.raises(ManifestError, match=r"train\.dockerfile"):
        load_submission(root)


def test_a_sample_image_is_looked_for_in_the_serve_context(tmp_path):
    root = make(
        tmp_path,
        '[serve]\ncontext = "inference"\nsample_image = "seven_7.png"\n',
        files=("train/Dockerfile", "inference/Dockerfile", "inference/seven_7.png"),
    )
    serve = load_submission(root).serve
    assert serve.sample_image == root / "inference" / "seven_7.png"
    assert serve.sample_label == 7


def test_a_sample_image_without_a_digit_in_its_name_has_no_label(tmp_path):
    root = make(
        tmp_path,
        '[serve]\nsample_image = "digit.png"\n',
        files=("train/Dockerfile", "serve/Dockerfile", "serve/digit.png"),
    )
    serve = load_submission(root).serve
    assert serve.sample_image == root / "serve" / "digit.png" and serve.sample_label is None


def test_a_linked_sample_image_is_the_file_it_leads_to_with_the_label_of_its_name(tmp_path):
    root = make(tmp_path, files=("train/Dockerfile", "serve/Dockerfile", "serve/img/real.png"))
    (root / "serve" / "digit_3.png").symlink_to("img/real.png")
    serve = load_submission(root).serve
    assert serve.sample_image == root / "serve" / "img" / "real.png"
    assert serve.sample_label == 3


def test_in_a_serve_folder_any_image_will_do_when_none_names_a_digit(tmp_path):
    root = make(tmp_path, files=("train/Dockerfile", "serve/Dockerfile", "serve/sample.png"))
    serve = load_submission(root).serve
    assert serve.sample_image == root / "serve" / "sample.png" and serve.sample_label is None


def test_the_warning_about_several_images_names_where_they_are(tmp_path):
    in_serve = make(
        tmp_path / "a", files=("train/Dockerfile", "serve/Dockerfile", "serve/1.png", "serve/2.png")
    )
    (warning,) = load_submission(in_serve).warnings
    assert "serve/" in warning and "submission folder" not in warning
    flat = make(
        tmp_path / "b", files=("Dockerfile.gpu", "Dockerfile.infer.gpu", "digit_1.png", "d_2.png")
    )
    warnings = [w for w in load_submission(flat).warnings if "several images" in w]
    assert len(warnings) == 1 and "in the submission folder" in warnings[0]


def test_a_manifest_dockerfile_outside_is_refused_naming_the_key(tmp_path):
    root = make(
        tmp_path, '[train]\ndockerfile = "../elsewhere/Dockerfile"\n', files=("Dockerfile",)
    )
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "Dockerfile").write_text("FROM alpine\n")
    with pytest.raises(
        ManifestError, match=r"train\.dockerfile: '\.\./elsewhere/Dockerfile' leaves"
    ):
        load_submission(root)


def test_a_layout_folder_reached_through_a_link_out_and_back_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make(tmp_path, files=("real/Dockerfile", "serve/Dockerfile"))
    (outside / "Dockerfile").symlink_to(root / "real" / "Dockerfile")  # back inside
    (root / "training").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"train\.context: 'training' leaves"):
        load_submission(root)
