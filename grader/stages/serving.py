"""The inference half: preparing the serve context, and checking a running TorchServe.

Each function returns an outcome (passed, or the reason it did not with the evidence) rather
than raising, so that the checks stay thin and a wait is done once per submission.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from PIL import Image

from grader.domain.dataset import ROWS, Digits
from grader.domain.intake import IntakeRefused, copy_tree
from grader.domain.predictions import PredictionFormatError, parse_prediction
from grader.domain.waiting import Deadline, NotReady, Probe, wait_for
from grader.engine.containers import RunningServer
from grader.engine.diagnosis import ContainerInspector, Listener
from grader.engine.outputs import place_file
from grader.stages.torchserve import (
    DeadlineExceeded,
    TorchServeAPI,
    is_token_error,
    json_body,
    model_names,
    worker_statuses,
)

INFERENCE_PORT, MANAGEMENT_PORT, METRICS_PORT = 8080, 8081, 8082
SERVER_PORTS = (INFERENCE_PORT, MANAGEMENT_PORT, METRICS_PORT)
LOOK_INSIDE_EVERY_S = 2.0
# What the runtime prints when a container's command (or its script's interpreter) is missing.
NOT_EXECUTABLE = re.compile(r"exec [^\n]*: no such file or directory")
LAST_CALL_S = 0.5  # the least a call gets at the end of a wait: a wait may overrun by this
READY_LIMIT = "server_ready_seconds"
INCOMPLETE = "an incomplete answer"
BIND_ADVICE = (
    "set inference_address=http://0.0.0.0:8080 and management_address=http://0.0.0.0:8081 in "
    "config.properties"
)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""
    log: str = ""


@dataclass
class Server:
    """A started inference container and what the grader learned about it."""

    running: RunningServer
    api: TorchServeAPI | None  # None when the container exited before its ports were published
    notes: list[str] = field(default_factory=list)
    _inspector: ContainerInspector | None = field(default=None, repr=False)

    @property
    def inspector(self) -> ContainerInspector:
        """One per server: once a command hung in the container, none is tried again."""
        if self._inspector is None:
            self._inspector = ContainerInspector(self.running.container)
        return self._inspector


def prepare_serve_context(
    context: Path, model_path: str, trained_model: Path | None, scratch: Path
) -> tuple[Path | None, str]:
    """Copy the serve context to `scratch` with the model at `model_path`.

    The copy follows no link, and links that leave it lead nowhere; the model is written only
    into real folders of the copy. Returns the model's origin ("trained" or "committed") or None
    with the reason there is none.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        copy_tree(context, scratch)
    except IntakeRefused as error:
        return None, str(error)
    folder, problem = _real_folder(
        scratch, Path(model_path).parent, create=trained_model is not None
    )
    if folder is None:
        return None, f"serve.model_path {model_path}: {problem}"
    target = folder / Path(model_path).name
    if target.is_dir() and not target.is_symlink():
        return None, (
            f"serve.model_path {model_path} is a folder in {context.name}/; name the model file"
        )
    if trained_model is not None:
        place_file(trained_model, target)  # a link, not a second copy, where possible
        return scratch, "trained"
    if target.is_file() and not target.is_symlink():
        return scratch, "committed"
    return None, (
        f"there is no model to serve: training produced none and {model_path} is not in "
        f"{context.name}/"
    )


def _real_folder(root: Path, relative: Path, create: bool) -> tuple[Path | None, str]:
    """The real folder `relative` names under `root` (made when `create`), with links inside
    `root` followed; None and why when it leads out of `root` or is not a folder."""
    root = root.resolve()
    current = root
    for part in relative.parts:
        step = current / part
        if step.is_symlink():
            step = Path(os.path.realpath(step))
            if not step.is_relative_to(root):
                return None, (
                    f"{part} is a link that leads out of the serve context; the grader writes "
                    "the model only into folders of the context itself"
                )
        if not step.exists() and create:
            step.mkdir()
        elif step.exists() and not step.is_dir():
            return None, f"{part} is a file where a folder is needed"
        current = step
    return current, ""


def exited_outcome(server: Server) -> Outcome | None:
    """A failure when the server container is no longer running, else None."""
    state = server.running.state()
    if state.get("Status") == "running":
        return None
    log = server.running.log_tail()
    not_executable = NOT_EXECUTABLE.search(log)
    if state.get("OOMKilled"):
        advice = "it was killed for exceeding its memory limit"
    elif not_executable:
        advice = (
            f"its command could not be executed ({not_executable.group(0).strip()}): the file, "
            "or the interpreter its #! line names, does not exist in the image; a script saved "
            "with Windows (CRLF) line endings names an interpreter such as `/bin/sh\\r`, so "
            "save it with LF line endings"
        )
    else:
        advice = (
            "a container stops when its main process ends: run TorchServe in the foreground "
            "(`torchserve --foreground ...`, or the official image's `serve` entrypoint) rather "
            "than `torchserve --start` alone"
        )
    return Outcome(
        False,
        f"the server container exited with code {state.get('ExitCode')} right after it started; "
        f"{advice}",
        log,
    )


def _use_token(server: Server, deadline: Deadline) -> bool:
    """Read key_file.json from the container and use its tokens; True when that worked."""
    assert server.api is not None
    if server.api.inference_key is not None:
        return False
    keys = server.inspector.key_file(deadline.left())
    if not keys:
        return False
    server.api.use_keys(keys)
    server.notes.append(
        "token authorization is on (TorchServe's default since 0.11.1); the grader read the "
        "keys from key_file.json in the container and sent them"
    )
    return True


def wait_healthy(server: Server, timeout_s: float) -> Outcome:
    exited = exited_outcome(server)
    if exited or server.api is None:
        return exited or Outcome(False, "the server container has no published ports")
    api = server.api
    deadline = Deadline(timeout_s)
    last_look = [0.0]
    elsewhere_seen: list[tuple[int, ...]] = []

    def unreachable_for_good() -> Listener | tuple[int, ...] | None:
        """What inside the container shows the inference API will stay unreachable: a listener
        on 127.0.0.1 only, or (seen in two looks in a row) TorchServe's management or metrics
        port listening while nothing listens on the inference port. TorchServe binds its
        inference API first, so a later API up without it means the inference API is elsewhere.
        No need to wait either out."""
        if time.monotonic() - last_look[0] < LOOK_INSIDE_EVERY_S:
            return None
        last_look[0] = time.monotonic()
        listeners = server.inspector.listeners(deadline.left()) or []
        on_port = [entry for entry in listeners if entry.port == INFERENCE_PORT]
        if on_port:
            elsewhere_seen.clear()
            return on_port[0] if all(entry.loopback_only for entry in on_port) else None
        if not any(entry.port in (MANAGEMENT_PORT, METRICS_PORT) for entry in listeners):
            elsewhere_seen.clear()
            return None
        elsewhere_seen.append(tuple(sorted({entry.port for entry in listeners})))
        return elsewhere_seen[-1] if len(elsewhere_seen) >= 2 else None

    def probe() -> Probe:
        if server.running.state().get("Status") != "running":
            return Probe(done=True, value="exited")
        try:
            response = api.ping(max(LAST_CALL_S, deadline.left()))
        except DeadlineExceeded as error:
            return Probe(seen=f"{INCOMPLETE}: {error}")
        except requests.RequestException as error:
            found = unreachable_for_good()
            if found is not None:
                return Probe(done=True, value=found)
            return Probe(seen=f"no HTTP answer ({type(error).__name__})")
        if is_token_error(response):
            if _use_token(server, deadline):
                return Probe(seen="token required; retrying with the key from key_file.json")
            return Probe(seen=f"HTTP {response.status_code}: token authorization failed and no "
                         "key_file.json was found in the container")  # fmt: skip
        body = json_body(response)
        if (
            response.status_code == 200
            and isinstance(body, dict)
            and body.get("status") == "Healthy"
        ):
            return Probe(done=True, value="healthy")
        return Probe(seen=f"HTTP {response.status_code} {response.text.strip()[:200]!r}")

    url = f"{api.inference_url}/ping"
    try:
        outcome = wait_for(
            probe,
            what=f"GET {url}",
            expected='{"status": "Healthy"}',
            timeout_s=timeout_s,
            limit=READY_LIMIT,
        )
    except NotReady as error:
        return _diagnose_unreachable(server, error)
    if isinstance(outcome, Listener):
        return Outcome(
            False,
            f"TorchServe listens on {outcome.address}:{INFERENCE_PORT} inside the container, "
            f"which the published port cannot reach, so GET {url} gets no answer; {BIND_ADVICE}",
            server.running.log_tail(),
        )
    if isinstance(outcome, tuple):
        ports = ", ".join(str(port) for port in outcome)
        return Outcome(
            False,
            f"nothing listens on port {INFERENCE_PORT} inside the container while the server "
            f"listens on {ports}: the inference API is on another port, so GET {url} gets no "
            f"answer; {BIND_ADVICE}",
            server.running.log_tail(),
        )
    if outcome == "exited":
        return exited_outcome(server) or Outcome(False, "the server container stopped")
    return Outcome(True)


def _diagnose_unreachable(server: Server, error: NotReady) -> Outcome:
    log = server.running.log_tail()
    if error.seen.startswith(INCOMPLETE):
        return Outcome(
            False,
            f"{error}; the server must answer each request in full, at once (a /ping that "
            "trickles its answer or never finishes it counts as no answer)",
            log,
        )
    if not error.seen.startswith("no HTTP answer"):
        return Outcome(False, str(error), log)
    inspector = server.inspector
    listeners = inspector.listeners()
    if listeners is None and inspector.unavailable:
        return Outcome(False, f"{error}; {inspector.unavailable}", log)
    if listeners is not None and not any(entry.port == INFERENCE_PORT for entry in listeners):
        processes = inspector.processes() or []
        running = "; ".join(processes[:8]) or "none visible"
        return Outcome(
            False,
            f"nothing listens on port {INFERENCE_PORT} inside the container (processes: "
            f"{running}); start TorchServe with its inference API on 0.0.0.0:{INFERENCE_PORT} "
            f"({error})",
            log,
        )
    return Outcome(False, str(error), log)


def wait_model_ready(server: Server, model: str, timeout_s: float) -> Outcome:
    exited = exited_outcome(server)
    if exited or server.api is None:
        return exited or Outcome(False, "the server container has no published ports")
    api = server.api
    deadline = Deadline(timeout_s)

    def call_time() -> float:
        return max(LAST_CALL_S, deadline.left())

    def probe() -> Probe:
        if server.running.state().get("Status") != "running":
            return Probe(done=True, value=("exited", []))
        try:
            response = api.describe(model, call_time())
            if is_token_error(response) and _use_token(server, deadline):
                response = api.describe(model, call_time())
            if response.status_code == 404:
                registered = model_names(json_body(api.models(call_time())))
                if registered:
                    return Probe(done=True, value=("missing", registered))
                return Probe(seen="no model is registered")
        except DeadlineExceeded as error:
            return Probe(seen=f"{INCOMPLETE} from the management API: {error}")
        except requests.RequestException as error:
            return Probe(seen=f"no HTTP answer from the management API ({type(error).__name__})")
        if response.status_code != 200:
            return Probe(seen=f"HTTP {response.status_code} {response.text.strip()[:200]!r}")
        statuses = worker_statuses(json_body(response))
        if "READY" in statuses:
            return Probe(done=True, value=("ready", statuses))
        return Probe(seen=f"workers: {', '.join(statuses) or 'none'}")

    log = server.running.log_tail
    try:
        kind, found = wait_for(  # type: ignore[misc]
            probe,
            what=f"GET {api.management_url}/models/{model}",
            expected="a worker with status READY",
            timeout_s=timeout_s,
            limit=READY_LIMIT,
        )
    except NotReady as error:
        if error.seen == "no model is registered":
            archives = server.inspector.model_archives()
            where = f"; archives in the image: {', '.join(archives)}" if archives else ""
            return Outcome(
                False,
                f"no model is registered within {timeout_s:g} s (limit {READY_LIMIT}){where}; "
                "load it at start-up "
                f"with `--models {model}={model}.mar` or `load_models={model}.mar` in "
                "config.properties (registering models after start-up is disabled by default)",
                log(),
            )
        if error.seen.startswith("workers"):
            return Outcome(
                False,
                f"no worker of model {model!r} became READY within {timeout_s:g} s (limit "
                f"{READY_LIMIT}; {error.seen}); the model probably fails to load: see the "
                "server log",
                _failure_lines(log(200)) or log(),
            )
        return Outcome(False, str(error), log())
    if kind == "exited":
        return exited_outcome(server) or Outcome(False, "the server container stopped")
    if kind == "missing":
        return Outcome(
            False,
            f"model {model!r} is not registered; the server has {', '.join(found)}. Register it "
            f"as {model!r} (torch-model-archiver --model-name {model}) or set serve.model_name "
            "in submission.toml",
        )
    return Outcome(True)


def _failure_lines(log: str, context: int = 3) -> str:
    """The lines of a server log around errors, so a long log shows what matters."""
    lines = log.splitlines()
    keep: set[int] = set()
    for index, line in enumerate(lines):
        if any(word in line for word in ("Traceback", "Error", "Exception", "died")):
            keep.update(range(max(0, index - context), min(len(lines), index + context + 1)))
    return "\n".join(lines[i] for i in sorted(keep)[-60:])


class PredictionError(Exception):
    pass


def predict_digit(api: TorchServeAPI, model: str, body: bytes) -> int:
    """The digit the server predicts for an image; PredictionError says what went wrong."""
    try:
        response = api.predict(model, body)
    except DeadlineExceeded as error:
        partial = (
            f": the server had sent {error.received} bytes of it and no more"
            if error.received
            else ""
        )
        raise PredictionError(
            f"no {'complete ' * bool(partial)}answer from /predictions/{model} within "
            f"{round(error.timeout_s, 1):g} s (limit predict_timeout_seconds){partial}; a "
            "handler must answer one digit well within that"
        ) from None
    except requests.RequestException as error:
        raise PredictionError(f"no answer from /predictions/{model} ({error})") from None
    if response.status_code != 200:
        raise PredictionError(
            f"/predictions/{model} answered HTTP {response.status_code}: "
            f"{response.text.strip()[:300]!r}"
        )
    try:
        return parse_prediction(response.content)
    except PredictionFormatError as error:
        raise PredictionError(str(error)) from error


def png(pixels: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("L", (ROWS, ROWS), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class HeldoutResult:
    total: int
    correct: int
    errors: list[str]  # the first few distinct request or format errors
    error_count: int
    wrong: list[tuple[int, int, int]]  # (index, label, predicted)
    not_sent: int = 0  # after too many failures in a row

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


STOP_AFTER_FAILURES = 12  # in a row, with no answer read: the server is broken or stuck


def predict_heldout(
    api: TorchServeAPI, model: str, digits: Digits, concurrency: int
) -> HeldoutResult:
    """Send every hidden digit as a PNG, at most `concurrency` requests in flight.

    After STOP_AFTER_FAILURES failures in a row (say, a handler stuck in a loop, each request
    waiting out its timeout) the rest are not sent: they count as failed.
    """
    lock = threading.Lock()
    failures_in_a_row = 0
    stopped = threading.Event()

    def one(index: int) -> tuple[int, int | None, str | None]:
        nonlocal failures_in_a_row
        if stopped.is_set():
            return index, None, None
        try:
            predicted = predict_digit(api, model, png(digits.image(index)))
        except PredictionError as error:
            with lock:
                failures_in_a_row += 1
                if failures_in_a_row >= STOP_AFTER_FAILURES:
                    stopped.set()
            return index, None, str(error)
        with lock:
            failures_in_a_row = 0
        return index, predicted, None

    correct = 0
    errors: list[str] = []
    error_count = not_sent = 0
    wrong: list[tuple[int, int, int]] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for index, predicted, error in pool.map(one, range(digits.count)):
            label = digits.labels[index]
            if predicted is None and error is None:
                not_sent += 1
                error_count += 1
            elif error is not None:
                error_count += 1
                if error not in errors and len(errors) < 5:
                    errors.append(error)
            elif predicted == label:
                correct += 1
            else:
                wrong.append((index, label, predicted))
    if not_sent:
        errors.append(
            f"stopped after {STOP_AFTER_FAILURES} failed requests in a row; {not_sent} digits "
            "were not sent"
        )
    return HeldoutResult(digits.count, correct, errors, error_count, wrong, not_sent)
