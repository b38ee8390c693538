"""Broken submissions graded for real: each loses exactly the checks it should, with advice."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from grader.domain.hints import CATALOG, hints_for
from grader.domain.results import submission_from_json
from grader.domain.rubric import DEFAULT_RUBRIC
from grader.engine.standins import BASE_IMAGE
from tests.cli import run_grader
from tests.examples import COMMITTED_MODEL, write_files, write_serve_variant

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
WRITE_MODEL = "echo weights > $OUTPUT_DIR/mnist_cnn.pt"

SUBMISSIONS = {
    "missing-base": {
        "train/Dockerfile": "FROM nvidia/cuda:0.0-no-such-tag\nCMD true\n",
    },
    "cpu-base": {
        "train/Dockerfile": f"FROM {BASE_IMAGE}\n"
        f"CMD sh -c 'echo Test accuracy: 97.5%; {WRITE_MODEL}'\n",
    },
    "bad-manifest": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\n",
        "submission.toml": "[train]\nepochs = 3\n",
    },
    "too-slow": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\n",
        "submission.toml": '[train]\ncommand = ["sh", "-c", "echo training; sleep 600"]\n',
    },
    "crashes": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\nCMD sh -c 'echo Traceback: boom >&2; exit 3'\n",
    },
    "silent": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\nCMD sh -c '{WRITE_MODEL}'\n",
    },
    # Asks torchvision to download MNIST in a container without network.
    "downloads": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\n"
        'CMD python -c "from torchvision import datasets; '
        "datasets.MNIST('mnist', download=True)\"\n",
    },
    "model-elsewhere": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\n"
        "CMD sh -c 'echo Test accuracy: 97.5%; echo weights > /tmp/mnist_cnn.pt'\n",
    },
    "cuda-on-cpu": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\n"
        "CMD python -c 'import torch; torch.zeros(1).cuda()'\n",
    },
    # 110 MB of data next to the Dockerfile: sent to the engine with every build.
    "huge-context": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\n"
        f"CMD sh -c 'echo Test accuracy: 97.5%; {WRITE_MODEL}'\n",
    },
    "inflated": {
        "train/Dockerfile": f"FROM {CUDA_BASE}\nCOPY model.pt /\n"
        "CMD sh -c 'echo Test set: Accuracy: 9990/10000; cp /model.pt $OUTPUT_DIR/mnist_cnn.pt'\n",
    },
}

CATALOG_TEXTS = {spec.id: spec.texts for spec in CATALOG}
# Hints the bundled examples show (tests/integration/test_grade_examples.py).
BUNDLED_EXAMPLE_HINTS = {"copy-missing", "server-loopback", "token-auth", "model-name"}
# Shown on corpus entries, asserted by tests/integration/test_corpus.py.
CORPUS_HINTS = {"crlf-line-endings", "server-wrong-port"}

SERVE_VARIANTS = {
    # `torchserve --start` alone returns at once, and the container ends with it.
    "serve-exits": {
        "Dockerfile": (
            'CMD ["serve"]',
            'CMD ["torchserve", "--start", "--ts-config", "/home/model-server/config.properties"]',
        ),
    },
    "serve-load-fails": {
        "handler.py": (
            "    def preprocess(self, data):",
            "    def initialize(self, context):\n"
            "        raise RuntimeError('cannot load weights')\n\n"
            "    def preprocess(self, data):",
        ),
    },
    # Reports 99.9% but serves a model that flattens channels last: flagged.
    "inflated": {
        "model.py": (
            "x = self.dropout(torch.flatten(x, 1))",
            "x = self.dropout(x.permute(0, 2, 3, 1).flatten(1))",
        ),
    },
    "serve-bad-body": {
        "handler.py": (
            "        return data.argmax(dim=1).tolist()",
            "        return ['<html>seven</html>' for _ in data]",
        ),
    },
}

EXPECTED = {
    "missing-base": {
        "train.dockerfile": ("passed", ""),
        "train.build": ("failed", "base image 'nvidia/cuda:0.0-no-such-tag' is not available"),
        "train.run": ("skipped", "skipped: the training image did not build"),
    },
    "cpu-base": {
        "train.dockerfile": ("failed", f"starts FROM {BASE_IMAGE}, which is not a CUDA-enabled"),
        "train.build": ("passed", ""),
        "train.run": ("passed", ""),
        "train.reported_accuracy": ("passed", ""),
        "train.model_artifact": ("passed", ""),
    },
    "bad-manifest": {
        check_id: ("failed", "train.epochs: unknown key")
        for check_id in ("train.dockerfile", "train.build", "train.run")
    },
    "too-slow": {
        "train.run": ("failed", "did not finish within the limit of 8 s and was killed"),
        "train.reported_accuracy": ("skipped", "skipped: training did not finish successfully"),
        "train.model_artifact": ("failed", "training did not write mnist_cnn.pt to $OUTPUT_DIR"),
    },
    "crashes": {
        "train.run": ("failed", "training exited with code 3"),
        "train.reported_accuracy": ("skipped", "skipped: training did not finish"),
    },
    "serve-exits": {
        "serve.build": ("passed", ""),
        "serve.ping": ("failed", "the server container exited with code 0 right after it started"),
        "serve.model_ready": ("skipped", "skipped: the server did not answer /ping"),
    },
    "serve-load-fails": {
        "serve.ping": ("passed", ""),
        "serve.model_ready": ("failed", "no worker of model 'mnist' became READY within 20 s"),
        "serve.heldout_accuracy": ("skipped", "skipped: the model has no READY worker"),
    },
    "serve-bad-body": {
        "serve.model_ready": ("passed", ""),
        "serve.sample_prediction": (
            "failed",
            "cannot read a digit from the prediction body '<html>seven</html>': it is not JSON",
        ),
        "serve.heldout_accuracy": ("failed", "every prediction failed; first error: cannot read"),
    },
    "inflated": {
        "train.reported_accuracy": ("passed", ""),
        "serve.heldout_accuracy": ("failed", "below the target 0.9000"),
    },
    "silent": {
        "train.run": ("passed", ""),
        "train.reported_accuracy": ("failed", "no accuracy found: write $OUTPUT_DIR/metrics.json"),
        "train.model_artifact": ("passed", ""),
    },
    "downloads": {"train.run": ("failed", "training exited with code 1")},
    "model-elsewhere": {
        "train.run": ("passed", ""),
        "train.model_artifact": ("failed", "training did not write mnist_cnn.pt to $OUTPUT_DIR"),
    },
    "cuda-on-cpu": {"train.run": ("failed", "training exited with code 1")},
    "huge-context": {"train.build": ("passed", ""), "train.model_artifact": ("passed", "")},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    for submission, files in SUBMISSIONS.items():
        write_files(folder / "submissions" / submission, files)
    for submission, changes in SERVE_VARIANTS.items():
        write_serve_variant(folder / "submissions" / submission, changes)
    shutil.copyfile(COMMITTED_MODEL, folder / "submissions" / "inflated" / "train" / "model.pt")
    with open(folder / "submissions" / "huge-context" / "train" / "mnist-copy.bin", "wb") as big:
        big.truncate(110 * 1000 * 1000)
    rubric = folder / "rubric.toml"
    rubric.write_text(
        DEFAULT_RUBRIC.read_text()
        .replace("train_seconds = 900", "train_seconds = 8", 1)
        .replace("server_ready_seconds = 180", "server_ready_seconds = 20", 1)
    )
    report_dir = folder / "reports"
    done = run_grader(
        "grade", str(folder / "submissions"),
        "--rubric", str(rubric),
        "--report-dir", str(report_dir),
        timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((report_dir / "results.json").read_text()), done.stdout, report_dir


# The hints `grader check` gives for each (hints.toml), in every language.
HINTS = {
    "missing-base": ["base-image"],
    "cpu-base": [],
    "bad-manifest": [],
    "too-slow": ["train-too-slow"],
    "crashes": [],
    "silent": ["accuracy-not-reported"],
    "downloads": ["no-network"],
    "model-elsewhere": ["model-not-in-output"],
    "cuda-on-cpu": ["cuda-without-gpu"],
    "huge-context": ["huge-context"],
    "serve-exits": ["server-exits"],
    "serve-load-fails": ["model-load-fails"],
    "serve-bad-body": ["prediction-body"],
    "inflated": ["under-trained"],
}


@pytest.mark.parametrize("submission_id", list(HINTS))
def test_hints(graded, submission_id):
    results, _, _ = graded
    result = submission_from_json(results["submissions"][submission_id])
    english, chinese = hints_for(result, "en"), hints_for(result, "zh")
    assert [hint.id for hint in english] == HINTS[submission_id]
    assert [hint.id for hint in chinese] == HINTS[submission_id]
    for en, zh in zip(english, chinese, strict=True):
        assert _filled_in(CATALOG_TEXTS[en.id]["en"], en.text)
        assert _filled_in(CATALOG_TEXTS[zh.id]["zh"], zh.text)


def _filled_in(template: str, text: str) -> bool:
    """Whether `text` is the catalog's `template` with each {fact} replaced by something."""
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.fullmatch(".+?".join(re.escape(part) for part in parts), text, re.DOTALL) is not None


def test_every_hint_is_shown_by_some_submission():
    shown = {hint for ids in HINTS.values() for hint in ids} | BUNDLED_EXAMPLE_HINTS | CORPUS_HINTS
    assert shown == set(CATALOG_TEXTS)


@pytest.mark.parametrize("submission_id", list(EXPECTED))
def test_verdicts(graded, submission_id):
    results, _, _ = graded
    checks = results["submissions"][submission_id]["checks"]
    for check_id, (status, phrase) in EXPECTED[submission_id].items():
        assert checks[check_id]["status"] == status, checks[check_id]
        assert phrase in checks[check_id]["message"]


def test_failure_messages_carry_the_log(graded):
    results, _, _ = graded
    crash = results["submissions"]["crashes"]["checks"]["train.run"]
    assert "Traceback: boom" in crash["log_excerpt"]
    slow = results["submissions"]["too-slow"]["checks"]["train.run"]
    assert "killed at the wall-time limit of 8 s" in slow["log_excerpt"]


def test_a_model_that_fails_to_load_shows_its_traceback(graded):
    results, _, _ = graded
    ready = results["submissions"]["serve-load-fails"]["checks"]["serve.model_ready"]
    assert "RuntimeError: cannot load weights" in ready["log_excerpt"]


def test_reported_accuracy_far_above_the_measured_one_is_flagged(graded):
    results, stdout, report_dir = graded
    flags = results["submissions"]["inflated"]["flags"]
    assert len(flags) == 1
    assert flags[0].startswith("reported accuracy 0.9990 is more than 0.10 above the accuracy")
    assert all(not results["submissions"][s]["flags"] for s in EXPECTED if s != "inflated")
    assert f"FLAG  {flags[0]}" in stdout
    assert f'name="flag.1" value="{flags[0]}"' in (report_dir / "junit.xml").read_text()


def test_missing_base_image_names_every_source_tried(graded):
    results, _, _ = graded
    message = results["submissions"]["missing-base"]["checks"]["train.build"]["message"]
    assert "not on this host; pull failed (" in message
    assert "no offline stand-in exists for it" in message


def test_custom_rubric_is_recorded(graded):
    results, _, report_dir = graded
    assert results["rubric"] == str(report_dir.parent / "rubric.toml")
