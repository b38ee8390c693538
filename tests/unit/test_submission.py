from __future__ import annotations

import pytest

from grader.errors import ManifestError
from grader.submission import discover, load_submission


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
        ("[train\n", "not valid TOML"),
        ("[trian]\n", "trian: unknown key; allowed here: serve, student, train"),
        ("[train]\nepochs = 3\n", "train.epochs: unknown key"),
        ('[train]\ncontext = "../other"\n', "train.context: '../other' leaves the submission"),
        ('[train]\ndockerfile = "/etc/passwd"\n', "train.dockerfile: '/etc/passwd' leaves"),
        ('[serve]\nsample_image = "../../x.png"\n', "serve.sample_image: '../../x.png' leaves"),
        ('[train]\ncommand = "python t.py"\n', "train.command: must be a list of strings"),
        ('[train]\nmodel_file = "out/m.pt"\n', "train.model_file: must be a plain file name"),
        ('[serve]\nmodel_path = "../m.pt"\n', "serve.model_path: must be a relative path"),
        ("[serve]\nsample_label = 12\n", "serve.sample_label: must be a digit 0-9, got 12"),
        ("[student]\nid = 42\n", "student.id: must be a string, got 42"),
        ('[student]\nid = " "\n', "student.id: must not be empty"),
        ('student = "x"\n', "student: must be a table"),
    ],
)
def test_manifest_errors_name_file_key_and_problem(tmp_path, manifest, message):
    root = make(tmp_path, manifest)
    with pytest.raises(ManifestError) as raised:
        load_submission(root)
    assert str(raised.value).startswith(str(root / "submission.toml"))
    assert message in str(raised.value)


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
