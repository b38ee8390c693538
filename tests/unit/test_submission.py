from __future__ import annotations

import os

import pytest

from grader.domain.errors import ManifestError
from grader.domain.submission import discover, is_submission_dir, load_submission


def make(tmp_path, manifest=None, files=("train/Dockerfile",)):
    root = tmp_path / "2023999"
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("FROM alpine\n")
    if manifest is not None:
        (root / "submission.toml").write_text(manifest)
    return root


def test_defaults_without_manifest(tmp_path):
    root = make(tmp_path, files=("train/Dockerfile", "serve/Dockerfile", "serve/digit_7.png"))
    submission = load_submission(root)
    assert submission.id == "2023999"
    assert submission.train.context == root / "train"
    assert submission.train.dockerfile == root / "train" / "Dockerfile"
    assert submission.train.command == ()
    assert submission.train.model_file == "mnist_cnn.pt"
    assert submission.serve.model_name == "mnist"
    assert submission.serve.sample_image == root / "serve" / "digit_7.png"
    assert submission.serve.sample_label == 7


def test_manifest_values(tmp_path):
    root = make(
        tmp_path,
        '[student]\nid = "S-01"\nname = "Li Si"\n'
        '[train]\ncontext = "code"\ncommand = ["python", "t.py"]\nmodel_file = "m.pt"\n'
        '[serve]\nsample_image = "mine.jpg"\nsample_label = 3\n',
        files=("code/Dockerfile",),
    )
    submission = load_submission(root)
    assert (submission.id, submission.student_name, submission.slug) == ("S-01", "Li Si", "s-01")
    assert submission.train.context == root / "code"
    assert submission.train.command == ("python", "t.py")
    assert submission.train.model_file == "m.pt"
    assert submission.serve.sample_label == 3


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("[trian]\n", "trian: unknown key; allowed here: serve, student, train"),
        (
            "[train]\nepochs = 3\n",
            "train.epochs: unknown key; allowed here: command, context, dockerfile, model_file",
        ),
        (
            '[train]\ncontext = "../other"\n',
            "train.context: '../other' leaves the submission folder; use a path inside it",
        ),
        ('[train]\ncontext = ""\n', "train.context: must not be empty"),
        ('[train]\ncontext = "code"\ndockerfile = ""\n', "train.dockerfile: must not be empty"),
        (
            '[train]\ndockerfile = "/etc/passwd"\n',
            "train.dockerfile: '/etc/passwd' leaves the submission folder; use a path inside it",
        ),
        (
            '[serve]\nsample_image = "../../x.png"\n',
            "serve.sample_image: '../../x.png' leaves the submission folder; use a path inside it",
        ),
        (
            '[train]\ncommand = "python t.py"\n',
            "train.command: must be a list of strings, got 'python t.py'",
        ),
        ('[train]\ncommand = ["python", 3]\n', "train.command[1]: must be a string, got 3"),
        (
            '[train]\nmodel_file = "out/m.pt"\n',
            "train.model_file: must be a plain file name, got 'out/m.pt'",
        ),
        (
            '[serve]\nmodel_path = "../m.pt"\n',
            "serve.model_path: must be a relative path inside the context, got '../m.pt'",
        ),
        ("[serve]\nmodel_name = 5\n", "serve.model_name: must be a string, got 5"),
        ("[serve]\nsample_label = 12\n", "serve.sample_label: must be a digit 0-9, got 12"),
        ("[serve]\nsample_label = true\n", "serve.sample_label: must be a digit 0-9, got true"),
        ("[student]\nid = 42\n", "student.id: must be a string, got 42"),
        (
            '[student]\nid = " "\n',
            "student.id: must not be empty; give your student id or leave the key out",
        ),
        ('student = "x"\n', "student: must be a table, got 'x'"),
    ],
)
def test_manifest_errors_name_file_key_and_problem(tmp_path, manifest, message):
    root = make(tmp_path, manifest)
    with pytest.raises(ManifestError) as raised:
        load_submission(root)
    assert str(raised.value) == f"{root / 'submission.toml'}: {message}"


def test_a_manifest_that_is_not_toml_is_one_line(tmp_path):
    root = make(tmp_path, "[train\n")
    with pytest.raises(ManifestError) as raised:
        load_submission(root)
    assert str(raised.value).startswith(f"{root / 'submission.toml'}: not valid TOML (")
    assert "\n" not in str(raised.value)


def test_symlinked_context_that_leaves_the_submission_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make(tmp_path, '[train]\ncontext = "link"\n')
    (root / "link").symlink_to(outside)
    with pytest.raises(ManifestError, match="leaves the submission folder"):
        load_submission(root)


def test_several_sample_images_warn(tmp_path):
    root = make(tmp_path, files=("train/Dockerfile", "serve/a_1.png", "serve/b_2.png"))
    submission = load_submission(root)
    assert submission.serve.sample_image == root / "serve" / "a_1.png"
    assert submission.serve.sample_label == 1
    assert "several images" in submission.warnings[0]


def test_discover_single_and_folder_of_submissions(tmp_path):
    one = make(tmp_path)
    assert discover([one]) == [one.resolve()]
    (tmp_path / "notes").mkdir()
    assert discover([tmp_path]) == [one.resolve()]


def test_discover_errors(tmp_path):
    with pytest.raises(ManifestError, match="no such file or folder"):
        discover([tmp_path / "missing"])
    with pytest.raises(ManifestError, match=r"not a submission .* and holds none"):
        discover([tmp_path])


# --- the lab repository's own layout -------------------------------------------------------------

LAB_FILES = (
    "Dockerfile.gpu",
    "Dockerfile.cpu",
    "Dockerfile.infer.gpu",
    "Dockerfile.infer.cpu",
    "pytorch_mnist_basic.py",
    "config.properties",
    "digit_7.png",
)


def test_the_lab_layout_builds_both_halves_from_the_folder_itself(tmp_path):
    root = make(tmp_path, files=LAB_FILES)
    submission = load_submission(root)
    assert submission.train.context == root and submission.serve.context == root
    assert submission.train.dockerfile == root / "Dockerfile.gpu"
    assert submission.serve.dockerfile == root / "Dockerfile.infer.gpu"
    assert (submission.serve.sample_image, submission.serve.sample_label) == (
        root / "digit_7.png",
        7,
    )
    notes = " | ".join(submission.warnings)
    assert "training image is built from Dockerfile.gpu (preferred over Dockerfile.cpu)" in notes
    assert (
        "inference image is built from Dockerfile.infer.gpu (preferred over Dockerfile.infer.cpu)"
        in notes
    )
    assert "with the submission folder as build context" in notes
    assert notes.startswith("no train/Dockerfile: the training image is built from")


def test_the_lab_layout_with_cpu_files_only(tmp_path):
    root = make(tmp_path, files=("Dockerfile.cpu", "Dockerfile.infer.cpu", "7.png"))
    submission = load_submission(root)
    assert submission.train.dockerfile == root / "Dockerfile.cpu"
    assert submission.serve.dockerfile == root / "Dockerfile.infer.cpu"
    assert submission.serve.sample_label == 7
    assert "preferred over" not in " ".join(submission.warnings)


@pytest.mark.parametrize(
    ("files", "train", "serve"),
    [
        (("train.Dockerfile", "serve.Dockerfile"), "train.Dockerfile", "serve.Dockerfile"),
        (("Dockerfile.train", "Dockerfile.serve"), "Dockerfile.train", "Dockerfile.serve"),
        (("Dockerfile.train", "Dockerfile.infer"), "Dockerfile.train", "Dockerfile.infer"),
        (
            ("training/Dockerfile", "inference/Dockerfile"),
            "training/Dockerfile",
            "inference/Dockerfile",
        ),
    ],
)
def test_common_variants_are_recognised(tmp_path, files, train, serve):
    root = make(tmp_path, files=files)
    submission = load_submission(root)
    assert submission.train.dockerfile == root / train
    assert submission.train.context == (root / train).parent
    assert submission.serve.dockerfile == root / serve
    assert submission.serve.context == (root / serve).parent


def test_folder_variants_note_their_build_context(tmp_path):
    root = make(tmp_path, files=("training/Dockerfile", "inference/Dockerfile"))
    notes = " | ".join(load_submission(root).warnings)
    assert "built from training/Dockerfile with training/ as build context" in notes
    assert "built from inference/Dockerfile with inference/ as build context" in notes


@pytest.mark.parametrize(
    ("files", "train", "serve"),
    [
        # train/ and serve/ first, then the lab's names, then the variants
        (
            ("train/Dockerfile", "serve/Dockerfile", "Dockerfile.gpu", "Dockerfile.infer.gpu"),
            "train/Dockerfile",
            "serve/Dockerfile",
        ),
        (
            ("Dockerfile.cpu", "train.Dockerfile", "Dockerfile.infer.cpu", "inference/Dockerfile"),
            "Dockerfile.cpu",
            "Dockerfile.infer.cpu",
        ),
        # each half on its own
        (("train/Dockerfile", "Dockerfile.infer.gpu"), "train/Dockerfile", "Dockerfile.infer.gpu"),
    ],
)
def test_precedence_of_layouts(tmp_path, files, train, serve):
    root = make(tmp_path, files=files)
    submission = load_submission(root)
    assert submission.train.dockerfile == root / train
    assert submission.serve.dockerfile == root / serve


def test_the_default_layout_needs_no_note(tmp_path):
    root = make(tmp_path, files=("train/Dockerfile", "serve/Dockerfile", "serve/digit_7.png"))
    assert load_submission(root).warnings == ()


@pytest.mark.parametrize(
    ("files", "first", "second", "key"),
    [
        (("train.Dockerfile", "Dockerfile.train"), "train.Dockerfile", "Dockerfile.train", "train"),
        (
            ("Dockerfile.gpu", "serve.Dockerfile", "inference/Dockerfile"),
            "serve.Dockerfile",
            "inference/Dockerfile",
            "serve",
        ),
    ],
)
def test_two_candidates_of_one_rank_fail_naming_both_and_the_key(
    tmp_path, files, first, second, key
):
    root = make(tmp_path, files=files)
    with pytest.raises(ManifestError) as raised:
        load_submission(root)
    message = str(raised.value)
    assert message.startswith(str(root))
    assert first in message and second in message
    assert f'[{key}] dockerfile = "{first}"' in message


def test_a_manifest_dockerfile_settles_an_ambiguity(tmp_path):
    root = make(
        tmp_path,
        '[train]\ndockerfile = "Dockerfile.train"\n',
        files=("train.Dockerfile", "Dockerfile.train", "Dockerfile.infer.gpu"),
    )
    submission = load_submission(root)
    assert submission.train.dockerfile == root / "Dockerfile.train"
    assert submission.train.context == root
    assert not any("training image" in note for note in submission.warnings)


def test_a_manifest_dockerfile_in_a_folder_makes_that_folder_the_context(tmp_path):
    root = make(tmp_path, '[serve]\ndockerfile = "web/Dockerfile"\n', files=("web/Dockerfile",))
    submission = load_submission(root)
    assert submission.serve.context == root / "web"
    assert submission.serve.dockerfile == root / "web" / "Dockerfile"


def test_manifest_keys_win_over_every_layout(tmp_path):
    root = make(
        tmp_path,
        '[train]\ncontext = "code"\n[serve]\ncontext = "."\ndockerfile = "Dockerfile.cpu"\n',
        files=("code/Dockerfile", "train/Dockerfile", "Dockerfile.gpu", "Dockerfile.cpu"),
    )
    submission = load_submission(root)
    assert submission.train.dockerfile == root / "code" / "Dockerfile"
    assert submission.serve.dockerfile == root / "Dockerfile.cpu"
    assert submission.serve.context == root


def test_in_a_flat_layout_a_screenshot_is_not_the_digit(tmp_path):
    root = make(
        tmp_path,
        files=("Dockerfile.gpu", "Dockerfile.infer.gpu", "screenshot.png", "a_report.jpg"),
    )
    submission = load_submission(root)
    assert submission.serve.sample_image is None
    root = make(
        tmp_path / "2",
        files=(
            "Dockerfile.gpu",
            "Dockerfile.infer.gpu",
            "Screenshot 2024-05-01 at 3.png",
            "aaa.png",
            "my_digit_4.jpeg",
        ),
    )
    submission = load_submission(root)
    assert (submission.serve.sample_image, submission.serve.sample_label) == (
        root / "my_digit_4.jpeg",
        4,
    )


def test_a_digit_named_image_is_preferred_in_the_serve_folder(tmp_path):
    root = make(
        tmp_path, files=("train/Dockerfile", "serve/Dockerfile", "serve/arch.png", "serve/8.png")
    )
    submission = load_submission(root)
    assert (submission.serve.sample_image, submission.serve.sample_label) == (
        root / "serve" / "8.png",
        8,
    )


def test_the_digit_next_to_an_inference_folder_is_found(tmp_path):
    root = make(tmp_path, files=("training/Dockerfile", "inference/Dockerfile", "digit_2.png"))
    submission = load_submission(root)
    assert (submission.serve.sample_image, submission.serve.sample_label) == (
        root / "digit_2.png",
        2,
    )


@pytest.mark.parametrize(
    "names",
    [
        ("Dockerfile.gpu",),
        ("Dockerfile.infer.cpu",),
        ("train.Dockerfile",),
        ("Dockerfile.serve",),
        ("inference/Dockerfile",),
    ],
)
def test_lab_layout_folders_are_submissions(tmp_path, names):
    batch = tmp_path / "batch"
    root = make(batch, files=names)
    assert is_submission_dir(root)
    assert discover([batch]) == [root.resolve()]
    assert discover([root]) == [root.resolve()]


def test_a_folder_named_inference_without_a_dockerfile_is_no_submission(tmp_path):
    (tmp_path / "inference").mkdir()
    (tmp_path / "notes.md").write_text("x")
    assert not is_submission_dir(tmp_path)


def test_a_dockerfile_that_links_out_of_the_submission_is_not_a_candidate(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("FROM alpine\n")
    root = make(tmp_path, files=("Dockerfile.cpu", "Dockerfile.infer.gpu"))
    (root / "Dockerfile.gpu").symlink_to(outside)
    assert load_submission(root).train.dockerfile == root / "Dockerfile.cpu"


def test_a_manifest_that_links_out_of_the_submission_is_refused(tmp_path):
    outside = tmp_path / "secret.toml"
    outside.write_text('[student]\nid = "x"\n')
    root = make(tmp_path)
    (root / "submission.toml").symlink_to(outside)
    with pytest.raises(ManifestError, match="a link that leads out of the submission folder"):
        load_submission(root)


def test_a_huge_manifest_is_refused(tmp_path):
    root = make(tmp_path, "# " + "x" * 200_000 + "\n")
    with pytest.raises(ManifestError, match=r"larger than 100 kB; a manifest holds a few keys"):
        load_submission(root)


def test_a_deeply_nested_manifest_is_refused(tmp_path):
    root = make(tmp_path, "a = " + "[" * 40_000 + "]" * 40_000 + "\n")
    with pytest.raises(ManifestError, match=r"nested too deeply to read; a manifest holds a few"):
        load_submission(root)


def test_files_of_a_later_rank_are_named_as_not_used(tmp_path):
    root = make(
        tmp_path,
        files=("train/Dockerfile", "Dockerfile.gpu", "train.Dockerfile", "Dockerfile.infer.cpu"),
    )
    submission = load_submission(root)
    assert submission.train.dockerfile == root / "train" / "Dockerfile"
    assert submission.warnings[0] == (
        "the training image is built from train/Dockerfile (preferred over Dockerfile.gpu, "
        "train.Dockerfile); set train.dockerfile in submission.toml to choose another file"
    )
    assert len(submission.warnings) == 2  # and the inference image's note


def test_a_folder_that_cannot_be_looked_into_is_found_and_then_refused(tmp_path, monkeypatch):
    from pathlib import Path

    from grader.domain.intake import IntakeRefused, stage

    batch = tmp_path / "batch"
    locked = make(batch)
    real_exists = Path.exists

    def exists(self, *args, **kwargs):
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    assert discover([batch]) == [locked.resolve()]
    monkeypatch.undo()
    real_scandir = os.scandir

    def scandir(path):
        if not isinstance(path, int) and Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(IntakeRefused, match=r"2023999/: refused, not copied: Permission denied"):
        stage(locked, tmp_path / "run")


def test_a_batch_folder_that_cannot_be_read_is_a_clear_error(tmp_path, monkeypatch):
    from pathlib import Path

    def iterdir(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(ManifestError) as raised:
        discover([tmp_path])
    assert str(raised.value) == f"{tmp_path}: cannot be read (Permission denied)"
