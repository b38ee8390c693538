"""Same verdicts on a busy host: every place where a verdict depends on a wait, and an honest
submission graded while busy loops on every core and an image build saturate the host.

The promise (README, "On a busy host"): a submission that uses at most half of each limit when
graded alone gets the same verdicts on a host saturated by other work. The waits go by what the
harness observes, never by fixed sleeps, and end only at the profile's limits.
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass, fields

import pytest

from grader.domain.checks import check_ids
from grader.domain.rubric import Limits, load_rubric
from grader.engine.daemon import connect
from tests.busy import rubric_with_fewer_hidden_digits, saturate
from tests.cli import ROOT, run_grader
from tests.examples import write_files, write_serve_variant

pytestmark = pytest.mark.integration

ALL = check_ids()


@dataclass(frozen=True)
class Wait:
    what: str
    where: str  # module:name of the code that waits
    limit: str  # the rubric limit that ends the wait
    checks: tuple[str, ...]  # whose verdicts it decides
    per_request: bool = False  # the limit bounds each request, not the check


WAITS = (
    Wait("`docker run alpine ls /` to exit", "grader.stages.labsteps:run_listing",
         "server_ready_seconds", ("env.alpine_run",)),
    Wait("the shell's prompt, listing and `tty` answer in a pseudo-terminal",
         "grader.stages.labsteps:drive_shell", "server_ready_seconds", ("env.alpine_interactive",)),
    Wait("an image build", "grader.engine.containers:build_image", "build_seconds",
         ("train.build", "serve.build")),
    Wait("the training container to exit", "grader.engine.containers:run_to_exit", "train_seconds",
         ("train.run", "train.reported_accuracy", "train.model_artifact")),
    Wait("GET /ping to answer Healthy", "grader.stages.serving:wait_healthy",
         "server_ready_seconds", ("serve.ping",)),
    Wait("a worker of the model to be READY", "grader.stages.serving:wait_model_ready",
         "server_ready_seconds", ("serve.model_ready",)),
    Wait("a look inside the server container (listeners, token file, processes)",
         "grader.engine.diagnosis:ContainerInspector", "server_ready_seconds",
         ("serve.ping", "serve.model_ready")),
    Wait("one prediction request", "grader.stages.serving:predict_digit", "predict_timeout_seconds",
         ("serve.sample_prediction", "serve.heldout_accuracy"), per_request=True),
    Wait("held-out predictions, stopped after failures in a row",
         "grader.stages.serving:predict_heldout", "predict_timeout_seconds",
         ("serve.heldout_accuracy",), per_request=True),
    Wait("any one check, even while it is blocked", "grader.engine.watchdog:Watchdog",
         "check_seconds", ALL),
    Wait("all checks of one submission", "grader.engine.watchdog:check_budget",
         "submission_seconds", ALL),
)  # fmt: skip

# Evaluates weights trained earlier on the mounted test digits and reports what it measured:
# real work, honest numbers, a few seconds alone.
EVALUATE = """
import json, os, shutil
import torch
from torchvision import datasets, transforms
from model import Net
from train import MEAN, STD, evaluate

model = Net()
model.load_state_dict(torch.load("mnist_cnn.pt"))
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
test = datasets.MNIST(os.environ["MNIST_ROOT"], train=False, download=True, transform=transform)
_, accuracy = evaluate(model, torch.device("cpu"), torch.utils.data.DataLoader(test, 500))
shutil.copy("mnist_cnn.pt", os.environ["OUTPUT_DIR"])
with open(os.path.join(os.environ["OUTPUT_DIR"], "metrics.json"), "w") as handle:
    json.dump({"test_accuracy": accuracy}, handle)
"""


@pytest.fixture(scope="module")
def graded_while_busy(tmp_path_factory):
    """An honest submission graded (every check) on a saturated host; its results."""
    folder = tmp_path_factory.mktemp("busy")
    submission = folder / "in" / "honest-on-a-busy-host"
    write_serve_variant(submission, {})
    train = submission / "train"
    train.mkdir()
    for name in ("model.py", "train.py"):
        shutil.copyfile(ROOT / "reference" / "train" / name, train / name)
    shutil.copyfile(submission / "serve" / "mnist_cnn.pt", train / "mnist_cnn.pt")
    dockerfile = (ROOT / "reference" / "train" / "Dockerfile").read_text()
    write_files(train, {
        "evaluate.py": EVALUATE,
        "Dockerfile": dockerfile.replace("COPY model.py train.py ./",
                                         "COPY model.py train.py evaluate.py mnist_cnn.pt ./"),
    })  # fmt: skip
    write_files(submission, {"submission.toml": '[train]\ncommand = ["python", "evaluate.py"]\n'})
    rubric = rubric_with_fewer_hidden_digits(folder)
    with saturate(connect(), folder, seconds=900) as load:
        done = run_grader("grade", str(submission), "--report-dir", str(folder / "report"),
                          "--rubric", str(rubric), "-j", "1", timeout=900)  # fmt: skip
        load.assert_busy()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((folder / "report" / "results.json").read_text())
    return results["submissions"]["honest-on-a-busy-host"], load_rubric(rubric)


def test_the_list_of_waits_is_complete_and_true():
    """Each wait named exists where said, ends at a limit the rubric has, and every check's
    verdict is covered: a new wait or check must be added here."""
    limits = {field.name for field in fields(Limits)}
    for wait in WAITS:
        module, name = wait.where.split(":")
        assert hasattr(importlib.import_module(module), name), wait.where
        assert wait.limit in limits, wait.limit
        assert set(wait.checks) <= set(ALL)
    assert {check for wait in WAITS for check in wait.checks} == set(load_rubric().checks)


@pytest.mark.parametrize("wait", WAITS, ids=[w.where.split(":")[1] for w in WAITS])
def test_an_honest_submission_passes_every_wait_on_a_saturated_host(graded_while_busy, wait):
    graded, rubric = graded_while_busy
    limits = rubric.profile("offline").limits
    checks = graded["checks"]
    for check_id in wait.checks:
        check = checks[check_id]
        assert check["status"] == "passed", (check_id, check["message"])
        if not wait.per_request:
            limit = getattr(limits, wait.limit)
            assert check["duration_s"] < limit, (check_id, check["duration_s"], wait.limit)
    if wait.per_request:  # no request ran out of its time (or failed otherwise)
        measured = graded["measurements"]
        assert (measured["heldout_errors"], measured["heldout_total"]) == (0, limits.heldout_digits)
    assert sum(check["duration_s"] for check in checks.values()) < limits.submission_seconds
