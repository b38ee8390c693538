"""Grading on a real local Ray cluster: a head and two worker nodes, each a separate `ray start`
on 127.0.0.1, the workers offering `docker: 1`."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grader.engine.containers import SUBMISSION_LABEL
from grader.engine.daemon import connect
from tests.cli import ROOT, free_port, run_grader
from tests.integration.test_grade_examples import EXPECTED

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).with_name("ray"))
QUICK = ["broken-build", "serve-localhost", "serve-wrong-name", "serve-token-auth"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The head's address and, per worker node, its node-manager port (to find its raylet).

    Each node is a `ray start --block` of this test's own, stopped by its process id: other
    Ray clusters on the host (`ray stop` would end them all) are left alone.
    """
    logs = tmp_path_factory.mktemp("ray")
    nodes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = logs / f"node-{len(nodes)}.log"
        with open(log, "wb") as output:
            nodes.append(subprocess.Popen(
                [RAY, "start", *args, "--block", "--disable-usage-stats"],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in log.read_bytes():
            assert nodes[-1].poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)

    head = f"127.0.0.1:{free_port()}"
    try:
        start(
            "--head", "--node-ip-address", "127.0.0.1", "--port", head.split(":")[1],
            "--num-cpus", "0", "--resources", '{"docker": 0}', "--include-dashboard", "false",
        )  # fmt: skip
        workers = []
        for _ in range(2):
            port = free_port()
            start("--address", head, "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                  "--resources", '{"docker": 1}', "--node-manager-port", str(port))  # fmt: skip
            workers.append(port)
        yield head, workers
    finally:
        for node in reversed(nodes):  # workers first, then the head
            with contextlib.suppress(ProcessLookupError):
                node.terminate()  # `--block` stops the node's processes on SIGTERM
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()


def _kill_node(node_manager_port: int) -> None:
    """SIGKILL a worker node's raylet: the node is lost with the tasks running on it."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            args
            and args[0].endswith(b"/raylet")
            and any(arg == f"--node_manager_port={node_manager_port}".encode() for arg in args)
        ):
            os.kill(int(pid), signal.SIGKILL)
            return
    raise AssertionError(f"no raylet with node manager port {node_manager_port}")


def test_the_examples_score_on_ray_as_they_do_locally(cluster, tmp_path):
    head, _ = cluster
    done = run_grader(
        "grade", "submissions", "reference", "--backend", "ray", "--ray-address", head,
        "--report-dir", str(tmp_path), timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["submissions"]
    assert {sid: r["score"] for sid, r in results.items()} == {
        sid: score for sid, (score, _) in EXPECTED.items()
    }
    for sid, (_, lost) in EXPECTED.items():
        for check_id, check in results[sid]["checks"].items():
            assert check["status"] == lost.get(check_id, ("passed", ""))[0], (sid, check_id)
    assert (tmp_path / "artifacts" / "reference" / "train.log").is_file()
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "report.html").is_file()
    # Run again: every result is taken from what was stored, nothing is sent to the cluster.
    again = run_grader("grade", "submissions", "reference", "--backend", "ray", "--ray-address",
                       head, "--report-dir", str(tmp_path))  # fmt: skip
    assert "8 unchanged submission(s) taken from stored results" in again.stdout
    assert "0 submission(s) sent to the Ray cluster" in again.stdout


def test_a_lost_node_costs_only_its_running_submission(cluster, tmp_path):
    head, workers = cluster
    # Ids of this test's own, so that its containers are told from other batches' on the host.
    tag = secrets.token_hex(3)
    ids = {f"{name}-{tag}": name for name in QUICK}
    paths = []
    for sid, name in ids.items():
        shutil.copytree(ROOT / "submissions" / name, tmp_path / "in" / sid)
        paths.append(str(tmp_path / "in" / sid))
    driver = subprocess.Popen(
        [sys.executable, "-m", "grader", "grade", *paths, "--backend", "ray", "--ray-address",
         head, "--report-dir", str(tmp_path / "report")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(15)  # both nodes are grading by now
    _kill_node(workers[0])
    output, _ = driver.communicate(timeout=1800)
    assert driver.returncode == 0, output[-3000:]
    results = json.loads((tmp_path / "report" / "results.json").read_text())["submissions"]
    assert sorted(results) == sorted(ids)
    assert {sid: r["score"] for sid, r in results.items()} == {
        sid: EXPECTED[name][0] for sid, name in ids.items()
    }
    finished = [line for line in output.splitlines() if line.startswith("[grader] [")]
    assert len(finished) == len(QUICK)  # each graded exactly once
    # The grading on the lost node ended with it and removed its containers.
    deadline = time.monotonic() + 60
    while left := [
        container
        for sid in ids
        for container in connect().containers.list(
            all=True, filters={"label": f"{SUBMISSION_LABEL}={sid}"}
        )
    ]:
        assert time.monotonic() < deadline, f"containers of the lost node's grading remain: {left}"
        time.sleep(1)


def test_failing_twice_on_the_cluster_is_an_infrastructure_error(cluster, tmp_path):
    from grader.cli.ray_backend import RayBatch, TaskOptions
    from grader.domain.dataset import load_dataset
    from grader.domain.handins import take_in_all
    from grader.domain.rubric import load_rubric
    from grader.domain.settings import Settings

    head, _ = cluster
    rubric = load_rubric()
    profile = rubric.profile("offline")
    lines: list[str] = []
    broken_node = TaskOptions(  # every node's grading stops at once: no such profile there
        profile="no-such-profile", rubric_text=None, gpus="none", image_sources_json=None,
        cpus=1, memory_mb=512, wants_gpu=False,
    )  # fmt: skip
    intakes = take_in_all([ROOT / "submissions" / "broken-build"], tmp_path / "intake",
                          tmp_path / "staged")  # fmt: skip
    batch = RayBatch(
        head, intakes, rubric, profile, load_dataset(Settings.from_env().datasets_dir / "offline"),
        tmp_path, broken_node, force=True, say=lines.append,
    )  # fmt: skip
    report = batch.run()
    result = report.submissions["broken-build"]
    assert {check.status for check in result.checks.values()} == {"error"}
    message = result.checks["train.build"].message
    assert message.startswith("infrastructure error, not the submission's: grading failed 2 times")
    assert "no-such-profile" in message
    assert not (tmp_path / "submissions" / "broken-build.json").exists()  # graded again next time


def _same_batch(folder: Path) -> Path:
    """Hand-ins that end early: a build that fails at once, the same one under an id another
    hand-in claims too, an invalid submission.toml, one with a link out of it, and an archive
    with an entry that leaves the submission folder."""
    batch = folder / "batch"
    for name, manifest in (("broken-build", None), ("anna", 'twin'), ("bert", 'twin'),
                           ("carl", None)):  # fmt: skip
        shutil.copytree(ROOT / "submissions" / "broken-build", batch / name)
        if manifest:
            (batch / name / "submission.toml").write_text(f'[student]\nid = "{manifest}"\n')
    (batch / "carl" / "submission.toml").write_text("[student\n")
    shutil.copytree(ROOT / "submissions" / "broken-build", batch / "dora")
    (batch / "dora" / "train" / "data").symlink_to(folder)  # a link out of the hand-in
    with zipfile.ZipFile(batch / "escape.zip", "w") as archive:
        archive.writestr("escape/train/Dockerfile", "FROM scratch\n")
        archive.writestr("../escaped-from-the-batch", "boom")
    return batch


def _comparable(report_dir: Path) -> dict[str, str]:
    """The reports with what differs between any two runs by nature taken out: the run's id and
    start time in results.json and junit.xml, how long each check and build took (durations
    and the measurements ending in `_seconds`), the ids the engine gives the containers and
    layers of a build and whether it had a step cached (in build logs), and the report folder
    in artifact paths."""
    results = json.loads((report_dir / "results.json").read_text())
    del results["run_id"], results["started_at"]
    for result in results["submissions"].values():
        for check in result["checks"].values():
            check["duration_s"] = 0
        for name in list(result["measurements"]):
            if name.endswith("_seconds"):
                result["measurements"][name] = 0
    junit = (report_dir / "junit.xml").read_text()
    junit = re.sub(r' time="[0-9.]+"', "", junit)
    junit = re.sub(r'(<testsuites[^>]* name="lab5-grader offline )[^"]+"', r"\1RUN\"", junit)
    texts = {
        "results.json": json.dumps(results, indent=1, sort_keys=True),
        "gradebook.csv": (report_dir / "gradebook.csv").read_text(),
        "junit.xml": junit,
    }
    return {part: _as_any_run(text, report_dir) for part, text in texts.items()}


def _as_any_run(text: str, report_dir: Path) -> str:
    text = re.sub(r"\b[0-9a-f]{12}\b", "ENGINE-ID", text).replace(str(report_dir), "REPORTS")
    # A build step the engine had cached, or ran: "Using cache" or its intermediate container
    # (a newline is \n inside results.json's strings, an arrow ---&gt; in junit.xml).
    newline, arrow = r"(?:\\n|\n)", "---(?:>|&gt;)"
    text = re.sub(rf" {arrow} Using cache{newline}", "", text)
    ran = rf" {arrow} Running in ENGINE-ID{newline}Removing intermediate container ENGINE-ID"
    return re.sub(rf"{ran}{newline}", "", text)


def test_ray_and_local_runs_report_the_same_batch_alike(cluster, tmp_path):
    head, _ = cluster
    batch = _same_batch(tmp_path)
    common = ["--seed", "1234", "--report-dir"]
    local = run_grader("grade", str(batch), "-j", "1", *common, str(tmp_path / "local"))
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    ray = run_grader("grade", str(batch), "--backend", "ray", "--ray-address", head, *common,
                     str(tmp_path / "ray"))  # fmt: skip
    assert ray.returncode == 0, ray.stdout[-3000:] + ray.stderr[-3000:]
    local_reports, ray_reports = _comparable(tmp_path / "local"), _comparable(tmp_path / "ray")
    for part, text in local_reports.items():
        differences = difflib.unified_diff(
            text.splitlines(), ray_reports[part].splitlines(), "local", "ray", lineterm=""
        )
        assert text == ray_reports[part], f"{part}:\n" + "\n".join(list(differences)[:200])
    # What the batch holds is in both, graded as the examples grade and refused with reasons.
    results = json.loads((tmp_path / "local" / "results.json").read_text())["submissions"]
    assert list(results) == ["twin", "twin (bert)", "broken-build", "carl", "dora", "escape"]
    assert results["broken-build"]["score"] == EXPECTED["broken-build"][0]
    verdicts = {sid: {c: check["status"] for c, check in result["checks"].items()}
                for sid, result in results.items()}  # fmt: skip
    for sid in ("twin", "twin (bert)", "dora"):  # graded as the example is, the link no matter
        assert verdicts[sid] == verdicts["broken-build"], sid
        assert results[sid]["score"] == results["broken-build"]["score"]
    for twin in ("twin", "twin (bert)"):
        assert any("student id 'twin' is claimed by 2" in flag for flag in results[twin]["flags"])
    escape = results["escape"]["checks"]["train.dockerfile"]
    assert escape["status"] == "failed"
    assert escape["message"].startswith(
        "escape.zip: refused, nothing was unpacked: entry '../escaped-from-the-batch' leaves the "
        "submission folder"
    )
    assert results["escape"]["score"] == results["carl"]["score"] == 0
    assert results["carl"]["checks"]["serve.build"]["message"].endswith(
        "; fix submission.toml and hand in again"
    )
    assert not (tmp_path / "escaped-from-the-batch").exists()
    # Stored by both under the same keys: each backend takes the other's stored results.
    again = run_grader("grade", str(batch), "--backend", "ray", "--ray-address", head, *common,
                       str(tmp_path / "local"))  # fmt: skip
    assert "4 unchanged submission(s) taken from stored results" in again.stdout, again.stdout
    assert "0 submission(s) sent to the Ray cluster" in again.stdout
