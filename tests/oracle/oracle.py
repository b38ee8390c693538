"""Grade lab 5 submissions the way the lab's instructions do it by hand, as a second opinion.

This script shares nothing with the harness but the dataset files and the rubric's targets:
it calls the `docker` command line (`docker build`, `docker run` with the contract's mounts and
environment, Docker's default capabilities, no other limits) and talks to TorchServe with plain
HTTP requests, as a TA with a terminal and curl would. Its verdicts are compared with the
harness's, check by check, on the corpus under tests/corpus/.

    python tests/oracle/oracle.py --dataset DIR --rubric grader/domain/rubric.toml \
        --profile offline \
        --jobs 2 SUBMISSION [SUBMISSION ...]

prints one JSON document: {submission folder name: {check id: {"passed": bool, "reason": str}}}.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

LABEL = "lab5-oracle"
# Everything one invocation creates carries this, so that it can remove exactly that.
RUN = f"{LABEL}.run={uuid.uuid4().hex}"
CHECKS = (
    "train.dockerfile",
    "train.build",
    "train.run",
    "train.reported_accuracy",
    "train.model_artifact",
    "serve.dockerfile",
    "serve.build",
    "serve.ping",
    "serve.model_ready",
    "serve.sample_prediction",
    "serve.heldout_accuracy",
)
# Generous bounds so that nothing hangs; none of them is meant to decide a verdict.
BUILD_TIMEOUT = 1200.0
TRAIN_TIMEOUT = 1200.0
REQUEST_TIMEOUT = 30.0
# Once TorchServe says it has bound its ports, a published port that still gets no HTTP answer
# at all this long after is one it does not listen on (a wrong port or address); any answer,
# even an unhealthy one, is waited for until the limit.
AFTER_STARTED = 30.0
IMAGES = (".png", ".jpg", ".jpeg")


@dataclass
class Half:
    context: Path
    dockerfile: Path


@dataclass
class Plan:
    root: Path
    train: Half
    serve: Half
    command: list[str]
    model_file: str
    model_name: str
    model_path: str
    sample_image: Path | None
    sample_label: int | None


@dataclass
class Targets:
    reported: float
    heldout: float
    ready_seconds: float


@dataclass
class Verdicts:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, check: str, passed: bool, reason: str) -> bool:
        self.checks[check] = {"passed": passed, "reason": reason}
        return passed


# --- what the submission is -----------------------------------------------------------------


def _first_existing(root: Path, names: list[str]) -> Path | None:
    return next((root / name for name in names if (root / name).is_file()), None)


def plan_of(root: Path) -> Plan:
    manifest_path = root / "submission.toml"
    manifest = tomllib.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    train = manifest.get("train", {})
    serve = manifest.get("serve", {})

    def half(section: dict[str, Any], folder: str, lab: list[str], variants: list[str]) -> Half:
        if "context" in section or "dockerfile" in section:
            context = root / section.get("context", folder)
            return Half(context, context / section.get("dockerfile", "Dockerfile"))
        if (root / folder).is_dir():
            return Half(root / folder, root / folder / "Dockerfile")
        found = _first_existing(root, lab) or _first_existing(root, variants)
        if found is not None:
            return Half(root, found)
        return Half(root / folder, root / folder / "Dockerfile")

    train_half = half(
        train,
        "train",
        ["Dockerfile.gpu", "Dockerfile.cpu"],
        ["train.Dockerfile", "Dockerfile.train"],
    )
    if not train_half.dockerfile.is_file() and (root / "training" / "Dockerfile").is_file():
        train_half = Half(root / "training", root / "training" / "Dockerfile")
    serve_half = half(
        serve,
        "serve",
        ["Dockerfile.infer.gpu", "Dockerfile.infer.cpu"],
        ["serve.Dockerfile", "Dockerfile.serve", "Dockerfile.infer"],
    )
    if not serve_half.dockerfile.is_file() and (root / "inference" / "Dockerfile").is_file():
        serve_half = Half(root / "inference", root / "inference" / "Dockerfile")

    sample: Path | None = None
    if "sample_image" in serve:
        sample = serve_half.context / serve["sample_image"]
    elif serve_half.context.is_dir():
        pictures = sorted(
            p for p in serve_half.context.iterdir() if p.suffix.lower() in IMAGES and p.is_file()
        )
        named = [p for p in pictures if _digit_in_name(p) is not None]
        sample = (named or pictures or [None])[0]
    label = serve.get("sample_label")
    if label is None and sample is not None:
        label = _digit_in_name(sample)
    return Plan(
        root=root,
        train=train_half,
        serve=serve_half,
        command=list(train.get("command", [])),
        model_file=train.get("model_file", "mnist_cnn.pt"),
        model_name=serve.get("model_name", "mnist"),
        model_path=serve.get("model_path", "mnist_cnn.pt"),
        sample_image=sample,
        sample_label=label,
    )


def _digit_in_name(path: Path) -> int | None:
    digits = re.findall(r"(?<!\d)\d(?!\d)", path.stem)
    return int(digits[0]) if len(digits) == 1 else None


# --- Dockerfiles ----------------------------------------------------------------------------


def final_base(dockerfile: Path) -> str:
    """The image the last stage starts from, following stage names and ARG defaults."""
    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    text = re.sub(r"\\\r?\n", " ", text)
    args: dict[str, str] = {}
    stages: dict[str, str] = {}
    base = ""
    for line in text.splitlines():
        words = line.strip().split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].upper()
        if keyword == "ARG" and not base and len(words) > 1 and "=" in words[1]:
            name, value = words[1].split("=", 1)
            args[name] = value.strip("\"'")
        if keyword == "FROM":
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                raise ValueError("a FROM line names no image")
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), rest[0])
            base = stages.get(image.lower(), image)
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages[rest[2].lower()] = base
    if not base:
        raise ValueError("no FROM line")
    return base


def cuda_enabled(image: str) -> bool:
    """As the handout has it: nvidia/cuda, pytorch/pytorch with CUDA, TorchServe's GPU tags."""
    repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    repository = repository.removeprefix("docker.io/").removeprefix("library/")
    tag = tag or "latest"
    if repository == "nvidia/cuda":
        return True
    if repository == "pytorch/pytorch":
        return "cpu" not in tag
    if repository == "pytorch/torchserve":
        return "gpu" in tag
    return False


def dockerfile_verdict(verdicts: Verdicts, check: str, half: Half) -> None:
    if not half.dockerfile.is_file():
        verdicts.set(check, False, f"{half.dockerfile} does not exist")
        return
    try:
        base = final_base(half.dockerfile)
    except ValueError as error:
        verdicts.set(check, False, f"{half.dockerfile.name} does not parse: {error}")
        return
    if cuda_enabled(base):
        verdicts.set(check, True, f"FROM {base}")
    else:
        verdicts.set(check, False, f"FROM {base} is not a CUDA-enabled image")


# --- docker ---------------------------------------------------------------------------------


def docker(*args: str, timeout: float = 120.0, data: bytes | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(
            ["docker", *args], input=data, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return 124, f"docker {args[0]} did not finish within {timeout:g} s"
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def build(half: Half, tag: str) -> tuple[bool, str]:
    code, log = docker(
        "build", "--label", RUN, "-f", str(half.dockerfile), "-t", tag, str(half.context),
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    return code == 0, log[-2000:]


def remove_leftovers() -> None:
    for kind, remove in (("ps", "rm"), ("images", "rmi")):
        _, ids = docker(kind, "-aq", "--filter", f"label={RUN}")
        if ids.split():
            docker(remove, "-f", *sorted(set(ids.split())))


# --- training ------------------------------------------------------------------------------


def reported_accuracy(output: Path, log: str) -> float | None:
    """metrics.json's test_accuracy, else the last accuracy the log prints."""
    metrics = output / "metrics.json"
    if metrics.is_file():
        try:
            value = json.loads(metrics.read_text()).get("test_accuracy")
        except ValueError:
            return None
        return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else None
    found: float | None = None
    for line in log.splitlines():
        handout = re.search(r"Accuracy:\s*(\d+)/(\d+)", line)
        if handout and int(handout.group(2)) > 0:
            found = int(handout.group(1)) / int(handout.group(2))
            continue
        percent = re.search(r"accuracy\D{0,5}?(\d+(?:\.\d+)?)\s*%", line, re.IGNORECASE)
        if percent:
            found = float(percent.group(1)) / 100
            continue
        fraction = re.search(r"accuracy\D{0,5}?(0?\.\d+|1\.0+)\b", line, re.IGNORECASE)
        if fraction:
            found = float(fraction.group(1))
    return found


def train(
    plan: Plan, verdicts: Verdicts, visible: Path, targets: Targets, scratch: Path
) -> Path | None:
    """The train.* verdicts; the trained model file when there is one."""
    dockerfile_verdict(verdicts, "train.dockerfile", plan.train)
    later = ("train.run", "train.reported_accuracy", "train.model_artifact")
    if not plan.train.dockerfile.is_file():
        verdicts.set("train.build", False, "no training Dockerfile")
        for check in later:
            verdicts.set(check, False, "no training image")
        return None
    tag = f"{LABEL}/{uuid.uuid4().hex[:12]}:train"
    built, log = build(plan.train, tag)
    if not verdicts.set("train.build", built, "built" if built else f"docker build failed: {log}"):
        for check in later:
            verdicts.set(check, False, "no training image")
        return None
    output = scratch / "output"
    output.mkdir()
    output.chmod(0o777)  # the contract: /output is writable for any user
    name = f"{LABEL}-train-{uuid.uuid4().hex[:12]}"
    try:
        code, log = docker(
            "run", "--name", name, "--label", RUN, "--network", "none",
            "-v", f"{visible}:/data:ro", "-v", f"{output}:/output",
            "-e", "MNIST_ROOT=/data", "-e", "OUTPUT_DIR=/output",
            tag, *plan.command,
            timeout=TRAIN_TIMEOUT,
        )  # fmt: skip
    finally:
        docker("rm", "-f", name)
        docker("rmi", "-f", tag)
    if not verdicts.set("train.run", code == 0, f"exit code {code}: {log[-1500:]}"):
        verdicts.set("train.reported_accuracy", False, "training did not finish")
        verdicts.set("train.model_artifact", False, "training did not finish")
        return None
    accuracy = reported_accuracy(output, log)
    verdicts.set(
        "train.reported_accuracy",
        accuracy is not None and accuracy >= targets.reported,
        f"reported {accuracy} against the target {targets.reported}",
    )
    model = output / plan.model_file
    if verdicts.set("train.model_artifact", model.is_file(), f"{model.name} in /output"):
        return model
    return None


# --- serving -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    inference: str = ""
    management: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def running(self) -> bool:
        code, state = docker("inspect", "-f", "{{.State.Running}}", self.name)
        return code == 0 and state.strip() == "true"

    def log(self) -> str:
        return docker("logs", self.name)[1]

    def request(
        self, api: str, path: str, body: bytes | None = None, timeout: float = REQUEST_TIMEOUT
    ) -> tuple[int, bytes]:
        """(HTTP status, body); status 0 when no HTTP answer came."""
        base = self.inference if api == "inference" else self.management
        # as `curl -T digit.png URL` sends it: a PUT of the raw bytes
        request = urllib.request.Request(base + path, data=body, method="PUT" if body else "GET")
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        if api in self.tokens:
            request.add_header("Authorization", f"Bearer {self.tokens[api]}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (OSError, ValueError) as error:
            return 0, str(error).encode()

    def read_tokens(self) -> bool:
        """The keys TorchServe wrote to key_file.json, as a TA reads them with docker exec."""
        script = (
            "cat key_file.json 2>/dev/null || "
            "cat $(find / -xdev -name key_file.json 2>/dev/null | head -n 1)"
        )
        code, text = docker("exec", self.name, "sh", "-c", script)
        try:
            keys = json.loads(text)
            self.tokens = {api: keys[api]["key"] for api in ("inference", "management")}
        except (ValueError, KeyError, TypeError):
            return False
        return code == 0


def digit_of(body: bytes) -> int | None:
    """The digit a prediction body names: 7, [7], {"7": 0.9, ...}, [{...}], {"prediction": 7}."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        for key in ("prediction", "predicted", "label", "class", "digit", "result"):
            if key in value:
                return digit_of(json.dumps(value[key]).encode())
        try:
            scores = {int(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        return max(scores, key=scores.__getitem__) if scores else None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool) and value == int(value):
        return int(value) if 0 <= value <= 9 else None
    return None


def wait_healthy(server: Server, seconds: float) -> tuple[bool, str]:
    deadline = time.monotonic() + seconds
    started_at: float | None = None
    last = ""
    while time.monotonic() < deadline:
        status, body = server.request("inference", "/ping", timeout=5)
        last = f"HTTP {status}: {body[:200]!r}"
        if status == 200:
            try:
                if json.loads(body).get("status") == "Healthy":
                    return True, last
            except (ValueError, AttributeError):
                pass
        token_needed = status in (400, 401) and b"token" in body.lower()
        if token_needed and not server.tokens and server.read_tokens():
            continue
        if not server.running():
            return False, f"the server container stopped: {server.log()[-1500:]}"
        if started_at is None and "Model server started" in server.log():
            started_at = time.monotonic()
        if status != 0:
            started_at = None
        elif started_at is not None and time.monotonic() - started_at > AFTER_STARTED:
            return False, f"TorchServe started but /ping through the published port gave {last}"
        time.sleep(1)
    return False, f"/ping not Healthy within {seconds:g} s: {last}"


def wait_ready(server: Server, model: str, seconds: float) -> tuple[bool, str]:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        status, body = server.request("management", f"/models/{model}", timeout=5)
        last = f"HTTP {status}: {body[:300]!r}"
        if status == 200:
            try:
                described = json.loads(body)
                workers = [w for entry in described for w in entry.get("workers", [])]
            except (ValueError, AttributeError, TypeError):
                workers = []
            if any(worker.get("status") == "READY" for worker in workers):
                return True, "READY"
        if status == 404:
            listed, others = server.request("management", "/models", timeout=5)
            if listed == 200 and b'"modelName"' in others:
                return False, f"{model} is not registered; the server has {others[:200]!r}"
        if not server.running():
            return False, f"the server container stopped: {server.log()[-1500:]}"
        time.sleep(1)
    return False, f"no READY worker within {seconds:g} s: {last}"


def read_idx(path: Path) -> tuple[int, bytes]:
    data = path.read_bytes()
    magic, count = struct.unpack(">II", data[:8])
    return count, data[16:] if magic == 0x803 else data[8:]


def hidden_pngs(dataset: Path) -> list[tuple[bytes, int]]:
    count, pixels = read_idx(dataset / "hidden" / "hidden-images-idx3-ubyte")
    _, labels = read_idx(dataset / "hidden" / "hidden-labels-idx1-ubyte")
    digits = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.frombytes("L", (28, 28), pixels[index * 784 : (index + 1) * 784]).save(buffer, "PNG")
        digits.append((buffer.getvalue(), labels[index]))
    return digits


def serve(
    plan: Plan,
    verdicts: Verdicts,
    trained: Path | None,
    digits: list[tuple[bytes, int]],
    targets: Targets,
    scratch: Path,
) -> None:
    dockerfile_verdict(verdicts, "serve.dockerfile", plan.serve)
    later = ("serve.ping", "serve.model_ready", "serve.sample_prediction", "serve.heldout_accuracy")
    if not plan.serve.dockerfile.is_file():
        verdicts.set("serve.build", False, "no inference Dockerfile")
        for check in later:
            verdicts.set(check, False, "no inference image")
        return
    # As the lab says: put the trained model into the inference folder, then build it.
    context = scratch / "serve"
    subprocess.run(["cp", "-a", str(plan.serve.context), str(context)], check=True)
    dockerfile = context / plan.serve.dockerfile.relative_to(plan.serve.context)
    if trained is not None:
        (context / plan.model_path).parent.mkdir(parents=True, exist_ok=True)
        (context / plan.model_path).write_bytes(trained.read_bytes())
    tag = f"{LABEL}/{uuid.uuid4().hex[:12]}:serve"
    built, log = build(Half(context, dockerfile), tag)
    if not verdicts.set("serve.build", built, "built" if built else f"docker build failed: {log}"):
        for check in later:
            verdicts.set(check, False, "no inference image")
        return
    server = Server(f"{LABEL}-serve-{uuid.uuid4().hex[:12]}")
    try:
        code, log = docker(
            "run", "-d", "--name", server.name, "--label", RUN,
            "-p", "127.0.0.1::8080", "-p", "127.0.0.1::8081", "-p", "127.0.0.1::8082", tag,
        )  # fmt: skip
        if code != 0:
            verdicts.set("serve.ping", False, f"docker run failed: {log[-1000:]}")
        else:
            ports = {}
            for port in ("8080", "8081"):
                found, where = docker("port", server.name, f"{port}/tcp")
                ports[port] = where.strip().splitlines()[0] if found == 0 else ""
            if not all(ports.values()):  # a container that stopped at once publishes nothing
                verdicts.set("serve.ping", False, f"the server stopped: {server.log()[-1500:]}")
            else:
                server.inference = f"http://{ports['8080']}"
                server.management = f"http://{ports['8081']}"
                healthy, reason = wait_healthy(server, targets.ready_seconds)
                verdicts.set("serve.ping", healthy, reason)
        if not verdicts.checks["serve.ping"]["passed"]:
            for check in later[1:]:
                verdicts.set(check, False, "the server is not healthy")
            return
        ready, reason = wait_ready(server, plan.model_name, targets.ready_seconds)
        if not verdicts.set("serve.model_ready", ready, reason):
            for check in later[2:]:
                verdicts.set(check, False, "the model is not ready")
            return
        path = f"/predictions/{plan.model_name}"
        if plan.sample_image is None or plan.sample_label is None:
            verdicts.set("serve.sample_prediction", False, "no digit image with a known label")
        else:
            status, body = server.request("inference", path, plan.sample_image.read_bytes())
            predicted = digit_of(body) if status == 200 else None
            verdicts.set(
                "serve.sample_prediction",
                predicted == plan.sample_label,
                f"{plan.sample_image.name} ({plan.sample_label}): HTTP {status} {body[:200]!r}",
            )
        heldout(server, path, digits, targets, verdicts)
    finally:
        docker("rm", "-f", server.name)
        docker("rmi", "-f", tag)


def heldout(
    server: Server, path: str, digits: list[tuple[bytes, int]], targets: Targets, verdicts: Verdicts
) -> None:
    failures_in_a_row = 0

    def one(item: tuple[bytes, int]) -> bool:
        nonlocal failures_in_a_row
        if failures_in_a_row >= 20:
            return False
        status, body = server.request("inference", path, item[0])
        failures_in_a_row = failures_in_a_row + 1 if status != 200 else 0
        return status == 200 and digit_of(body) == item[1]

    with ThreadPoolExecutor(4) as pool:
        correct = sum(pool.map(one, digits))
    accuracy = correct / len(digits)
    verdicts.set(
        "serve.heldout_accuracy",
        accuracy >= targets.heldout,
        f"{correct}/{len(digits)} = {accuracy:.4f} against the target {targets.heldout}",
    )


# --- one submission, many submissions -------------------------------------------------------


def grade(root: Path, dataset: Path, digits: list[tuple[bytes, int]], targets: Targets) -> dict:
    verdicts = Verdicts()
    started = time.monotonic()
    plan = plan_of(root)
    with tempfile.TemporaryDirectory(prefix="lab5-oracle-") as folder:
        scratch = Path(folder)
        trained = train(plan, verdicts, dataset / "visible", targets, scratch)
        serve(plan, verdicts, trained, digits, targets, scratch)
    return {
        "checks": {check: verdicts.checks[check] for check in CHECKS},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="the prepared dataset folder")
    parser.add_argument("--rubric", type=Path, required=True)
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("submissions", type=Path, nargs="+")
    args = parser.parse_args(argv)
    profile = tomllib.loads(args.rubric.read_text())["profiles"][args.profile]
    targets = Targets(
        reported=profile["targets"]["reported_accuracy"],
        heldout=profile["targets"]["heldout_accuracy"],
        ready_seconds=profile["limits"]["server_ready_seconds"],
    )
    digits = hidden_pngs(args.dataset)

    def one(root: Path) -> dict:
        try:
            return grade(root, args.dataset, digits, targets)
        except Exception as error:  # one submission's trouble never hides the others' verdicts
            reason = f"oracle error: {type(error).__name__}: {error}"
            return {"checks": {c: {"passed": False, "reason": reason} for c in CHECKS}}

    # Stopped early (SIGTERM), it still removes its containers and images.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            graded = pool.map(one, args.submissions)
            results = dict(zip((root.name for root in args.submissions), graded, strict=True))
    finally:
        remove_leftovers()
    json.dump(results, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
