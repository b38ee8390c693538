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
from typing import Literal, Never

import requests
from PIL import Image

from grader.domain.dataset import ROWS, Digits
from grader.domain.errors import ReasonedError
from grader.domain.intake import IntakeRefused, copy_tree
from grader.domain.predictions import PredictionFormatError, parse_prediction
from grader.domain.reasons import Failure, Reason, reason
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
BIND_ADVICE = (
    "set inference_address=http://0.0.0.0:8080 and management_address=http://0.0.0.0:8081 in "
    "config.properties"
)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    ok: bool
    message: str = ""
    log: str = ""
    reason: Reason | None = None  # why not ok, as data; its code lacks the check id

    @classmethod
    def failed(cls, message: str, log: str = "", reason: Reason | None = None) -> Outcome:
        return cls(ok=False, message=message, log=log, reason=reason)


PASSED = Outcome(ok=True)


# What one look at a server that is not ready yet found. Each says itself in a wait's message.


@dataclass(frozen=True)
class NoAnswer:
    """No HTTP answer at all: the connection was refused, reset or timed out."""

    error: str  # the kind of error, e.g. ConnectionError
    api: str = ""

    def __str__(self) -> str:
        return f"no HTTP answer{self.api} ({self.error})"


@dataclass(frozen=True)
class IncompleteAnswer:
    """An answer that began but did not end within the time a call had."""

    error: str
    api: str = ""

    def __str__(self) -> str:
        return f"an incomplete answer{self.api}: {self.error}"


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP answer other than the one waited for."""

    status: int
    text: str

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.text.strip()[:200]!r}"


@dataclass(frozen=True)
class TokenRetry:
    """Token authorization refused the call; the next one carries the key_file.json keys."""

    def __str__(self) -> str:
        return "token required; retrying with the key from key_file.json"


@dataclass(frozen=True)
class TokenMissing:
    """Token authorization refused the call and no key_file.json was found to read."""

    status: int

    def __str__(self) -> str:
        return (
            f"HTTP {self.status}: token authorization failed and no key_file.json was found in "
            "the container"
        )


@dataclass(frozen=True)
class NoModel:
    """The management API lists no model at all."""

    def __str__(self) -> str:
        return "no model is registered"


@dataclass(frozen=True)
class Workers:
    """The model is registered; these are its workers' statuses, none READY."""

    statuses: tuple[str, ...]

    def __str__(self) -> str:
        return f"workers: {', '.join(self.statuses) or 'none'}"


Seen = NoAnswer | IncompleteAnswer | HttpAnswer | TokenRetry | TokenMissing | NoModel | Workers


# How a wait for a server ended before its time ran out.


@dataclass(frozen=True)
class Exited:
    """The server container stopped."""


@dataclass(frozen=True)
class Healthy:
    """/ping answered {"status": "Healthy"}."""


@dataclass(frozen=True)
class LoopbackOnly:
    """The inference port listens on a loopback address only: published ports cannot reach it."""

    listener: Listener


@dataclass(frozen=True)
class PortsElsewhere:
    """TorchServe's other ports listen, the inference port does not: the API is elsewhere."""

    ports: tuple[int, ...]


@dataclass(frozen=True)
class Registered:
    """The model is not registered under the name asked for; these names are."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Ready:
    """A worker of the model is READY."""

    statuses: tuple[str, ...]


HealthEnd = Exited | Healthy | LoopbackOnly | PortsElsewhere
ReadyEnd = Exited | Registered | Ready


class _Looks:
    """What a wait's probe saw last, typed, for the diagnosis after the wait ran out."""

    def __init__(self) -> None:
        self.last: Seen | None = None

    def saw(self, state: Seen) -> Probe[Never]:
        self.last = state
        return Probe(seen=str(state))


@dataclass
class Server:
    """A started inference container and what the grader learned about it."""

    running: RunningServer
    api: TorchServeAPI | None  # None when the container exited before its ports were published
    notes: list[str] = field(default_factory=list)
    token_read: bool = False  # token authorization was on and the keys were read to get through
    _inspector: ContainerInspector | None = field(default=None, repr=False)

    @property
    def inspector(self) -> ContainerInspector:
        """One per server: once a command hung in the container, none is tried again."""
        if self._inspector is None:
            self._inspector = ContainerInspector(self.running.container)
        return self._inspector


@dataclass(frozen=True)
class ServeContext:
    """A private copy of the serve context with the model in place."""

    folder: Path
    model_origin: Literal["trained", "committed"]  # the weights training wrote, or the copy's


class _NoFolder(Exception):
    """Why the folder of the model path cannot take the model."""


def serve_context(
    context: Path, model_path: str, trained_model: Path | None, scratch: Path
) -> ServeContext | Failure:
    """Copy the serve context to `scratch` with the model at `model_path`, or why there is no
    context to build.

    The copy follows no link, and links that leave it lead nowhere; the model is written only
    into real folders of the copy.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        copy_tree(context, scratch)
    except IntakeRefused as error:
        return Failure(str(error), reason("intake-refused"))
    unusable = reason("model-path", model_path=model_path)
    try:
        folder = _real_folder(scratch, Path(model_path).parent, create=trained_model is not None)
    except _NoFolder as problem:
        return Failure(f"serve.model_path {model_path}: {problem}", unusable)
    target = folder / Path(model_path).name
    if target.is_dir() and not target.is_symlink():
        return Failure(
            f"serve.model_path {model_path} is a folder in {context.name}/; name the model file",
            unusable,
        )
    if trained_model is not None:
        place_file(trained_model, target)  # a link, not a second copy, where possible
        return ServeContext(scratch, model_origin="trained")
    if target.is_file() and not target.is_symlink():
        return ServeContext(scratch, model_origin="committed")
    return Failure(
        f"there is no model to serve: training produced none and {model_path} is not in "
        f"{context.name}/",
        reason("no-model", model_path=model_path),
    )


def _real_folder(root: Path, relative: Path, create: bool) -> Path:
    """The real folder `relative` names under `root` (made when `create`), with links inside
    `root` followed; _NoFolder when it leads out of `root` or is not a folder."""
    root = root.resolve()
    current = root
    for part in relative.parts:
        step = current / part
        if step.is_symlink():
            step = Path(os.path.realpath(step))
            if not step.is_relative_to(root):
                raise _NoFolder(
                    f"{part} is a link that leads out of the serve context; the grader writes "
                    "the model only into folders of the context itself"
                )
        if not step.exists() and create:
            step.mkdir()
        elif step.exists() and not step.is_dir():
            raise _NoFolder(f"{part} is a file where a folder is needed")
        current = step
    return current


def exited_outcome(server: Server) -> Outcome | None:
    """A failure when the server container is no longer running, else None."""
    state = server.running.state()
    if state.get("Status") == "running":
        return None
    log = server.running.log_tail()
    not_executable = NOT_EXECUTABLE.search(log)
    exit_code = state.get("ExitCode")
    why = reason("exited", exit_code=exit_code if isinstance(exit_code, int) else "unknown")
    if state.get("OOMKilled"):
        advice = "it was killed for exceeding its memory limit"
        why = reason("oom-killed", exit_code=why.facts["exit_code"])
    elif not_executable:
        why = reason("not-executable", error=not_executable.group(0).strip())
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
    return Outcome.failed(
        f"the server container exited with code {exit_code} right after it started; {advice}",
        log,
        why,
    )


def _stopped(server: Server) -> Outcome:
    """A wait that saw the container stop: why, read once more."""
    return exited_outcome(server) or Outcome.failed(
        "the server container stopped", reason=reason("exited", exit_code="unknown")
    )


NO_PORTS = Outcome.failed("the server container has no published ports", reason=reason("no-ports"))


def _use_token(server: Server, deadline: Deadline) -> bool:
    """Read key_file.json from the container and use its tokens; True when that worked."""
    assert server.api is not None
    if server.api.inference_key is not None:
        return False
    keys = server.inspector.key_file(deadline.left())
    if not keys:
        return False
    server.api.use_keys(keys)
    server.token_read = True
    server.notes.append(
        "token authorization is on (TorchServe's default since 0.11.1); the grader read the "
        "keys from key_file.json in the container and sent them"
    )
    return True


def wait_healthy(server: Server, timeout_s: float) -> Outcome:
    exited = exited_outcome(server)
    if exited or server.api is None:
        return exited or NO_PORTS
    api = server.api
    deadline = Deadline(timeout_s)
    last_look = [0.0]
    elsewhere_seen: list[tuple[int, ...]] = []
    looks = _Looks()

    def unreachable_for_good() -> LoopbackOnly | PortsElsewhere | None:
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
            loopback = all(entry.loopback_only for entry in on_port)
            return LoopbackOnly(on_port[0]) if loopback else None
        if not any(entry.port in (MANAGEMENT_PORT, METRICS_PORT) for entry in listeners):
            elsewhere_seen.clear()
            return None
        elsewhere_seen.append(tuple(sorted({entry.port for entry in listeners})))
        return PortsElsewhere(elsewhere_seen[-1]) if len(elsewhere_seen) >= 2 else None

    def probe() -> Probe[HealthEnd]:
        if server.running.state().get("Status") != "running":
            return Probe(done=True, value=Exited())
        try:
            response = api.ping(max(LAST_CALL_S, deadline.left()))
        except DeadlineExceeded as error:
            return looks.saw(IncompleteAnswer(str(error)))
        except requests.RequestException as error:
            found = unreachable_for_good()
            if found is not None:
                return Probe(done=True, value=found)
            return looks.saw(NoAnswer(type(error).__name__))
        if is_token_error(response):
            if _use_token(server, deadline):
                return looks.saw(TokenRetry())
            return looks.saw(TokenMissing(response.status_code))
        body = json_body(response)
        if (
            response.status_code == 200
            and isinstance(body, dict)
            and body.get("status") == "Healthy"
        ):
            return Probe(done=True, value=Healthy())
        return looks.saw(HttpAnswer(response.status_code, response.text))

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
        return _diagnose_unreachable(server, error, looks.last)
    if isinstance(outcome, LoopbackOnly):
        address = outcome.listener.address
        return Outcome.failed(
            f"TorchServe listens on {address}:{INFERENCE_PORT} inside the container, "
            f"which the published port cannot reach, so GET {url} gets no answer; {BIND_ADVICE}",
            server.running.log_tail(),
            reason("loopback-bind", address=address, port=INFERENCE_PORT),
        )
    if isinstance(outcome, PortsElsewhere):
        ports = ", ".join(str(port) for port in outcome.ports)
        return Outcome.failed(
            f"nothing listens on port {INFERENCE_PORT} inside the container while the server "
            f"listens on {ports}: the inference API is on another port, so GET {url} gets no "
            f"answer; {BIND_ADVICE}",
            server.running.log_tail(),
            reason("wrong-port", port=INFERENCE_PORT, ports=ports),
        )
    if isinstance(outcome, Exited):
        return _stopped(server)
    return PASSED


def _diagnose_unreachable(server: Server, error: NotReady, last: Seen | None) -> Outcome:
    log = server.running.log_tail()
    waited = reason("not-ready", seen=str(last or "nothing"), limit_s=error.timeout_s)
    if isinstance(last, IncompleteAnswer):
        return Outcome.failed(
            f"{error}; the server must answer each request in full, at once (a /ping that "
            "trickles its answer or never finishes it counts as no answer)",
            log,
            reason("incomplete-answer"),
        )
    if isinstance(last, TokenMissing):
        return Outcome.failed(str(error), log, reason("token-auth", status=last.status))
    if not isinstance(last, NoAnswer):
        return Outcome.failed(str(error), log, waited)
    inspector = server.inspector
    listeners = inspector.listeners()
    if listeners is None and inspector.unavailable:
        return Outcome.failed(
            f"{error}; {inspector.unavailable}",
            log,
            reason("look-inside-failed", limit_s=error.timeout_s),
        )
    if listeners is not None and not any(entry.port == INFERENCE_PORT for entry in listeners):
        processes = inspector.processes() or []
        running = "; ".join(processes[:8]) or "none visible"
        return Outcome.failed(
            f"nothing listens on port {INFERENCE_PORT} inside the container (processes: "
            f"{running}); start TorchServe with its inference API on 0.0.0.0:{INFERENCE_PORT} "
            f"({error})",
            log,
            reason("no-listener", port=INFERENCE_PORT, processes=running),
        )
    return Outcome.failed(str(error), log, reason("no-answer", limit_s=error.timeout_s))


def wait_model_ready(server: Server, model: str, timeout_s: float) -> Outcome:
    exited = exited_outcome(server)
    if exited or server.api is None:
        return exited or NO_PORTS
    api = server.api
    deadline = Deadline(timeout_s)
    looks = _Looks()
    management = " from the management API"

    def call_time() -> float:
        return max(LAST_CALL_S, deadline.left())

    def probe() -> Probe[ReadyEnd]:
        if server.running.state().get("Status") != "running":
            return Probe(done=True, value=Exited())
        try:
            response = api.describe(model, call_time())
            if is_token_error(response) and _use_token(server, deadline):
                response = api.describe(model, call_time())
            if response.status_code == 404:
                registered = model_names(json_body(api.models(call_time())))
                if registered:
                    return Probe(done=True, value=Registered(tuple(registered)))
                return looks.saw(NoModel())
        except DeadlineExceeded as error:
            return looks.saw(IncompleteAnswer(str(error), management))
        except requests.RequestException as error:
            return looks.saw(NoAnswer(type(error).__name__, management))
        if response.status_code != 200:
            return looks.saw(HttpAnswer(response.status_code, response.text))
        statuses = tuple(worker_statuses(json_body(response)))
        if "READY" in statuses:
            return Probe(done=True, value=Ready(statuses))
        return looks.saw(Workers(statuses))

    log = server.running.log_tail
    try:
        outcome = wait_for(
            probe,
            what=f"GET {api.management_url}/models/{model}",
            expected="a worker with status READY",
            timeout_s=timeout_s,
            limit=READY_LIMIT,
        )
    except NotReady as error:
        last = looks.last
        if isinstance(last, NoModel):
            archives = server.inspector.model_archives()
            where = f"; archives in the image: {', '.join(archives)}" if archives else ""
            return Outcome.failed(
                f"no model is registered within {timeout_s:g} s (limit {READY_LIMIT}){where}; "
                "load it at start-up "
                f"with `--models {model}={model}.mar` or `load_models={model}.mar` in "
                "config.properties (registering models after start-up is disabled by default)",
                log(),
                reason("no-model-registered", model=model, limit_s=timeout_s),
            )
        if isinstance(last, Workers):
            return Outcome.failed(
                f"no worker of model {model!r} became READY within {timeout_s:g} s (limit "
                f"{READY_LIMIT}; {last}); the model probably fails to load: see the "
                "server log",
                _failure_lines(log(200)) or log(),
                reason(
                    "workers-not-ready",
                    model=model,
                    workers=", ".join(last.statuses) or "none",
                    limit_s=timeout_s,
                ),
            )
        if isinstance(last, IncompleteAnswer):
            return Outcome.failed(str(error), log(), reason("incomplete-answer"))
        seen = str(last or "nothing")
        return Outcome.failed(str(error), log(), reason("not-ready", seen=seen, limit_s=timeout_s))
    if isinstance(outcome, Exited):
        return _stopped(server)
    if isinstance(outcome, Registered):
        found = ", ".join(outcome.names)
        return Outcome.failed(
            f"model {model!r} is not registered; the server has {found}. Register it "
            f"as {model!r} (torch-model-archiver --model-name {model}) or set serve.model_name "
            "in submission.toml",
            reason=reason("wrong-model-name", model=model, seen=found),
        )
    return PASSED


def _failure_lines(log: str, context: int = 3) -> str:
    """The lines of a server log around errors, so a long log shows what matters."""
    lines = log.splitlines()
    keep: set[int] = set()
    for index, line in enumerate(lines):
        if any(word in line for word in ("Traceback", "Error", "Exception", "died")):
            keep.update(range(max(0, index - context), min(len(lines), index + context + 1)))
    return "\n".join(lines[i] for i in sorted(keep)[-60:])


class PredictionError(ReasonedError):
    """A prediction request that gave no digit: what went wrong, and why as data."""


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
        limit = round(error.timeout_s, 1)
        raise PredictionError(
            f"no {'complete ' * bool(partial)}answer from /predictions/{model} within "
            f"{limit:g} s (limit predict_timeout_seconds){partial}; a "
            "handler must answer one digit well within that",
            reason("prediction-timeout", limit_s=limit),
        ) from None
    except requests.RequestException as error:
        raise PredictionError(
            f"no answer from /predictions/{model} ({error})",
            reason("request-failed", error=type(error).__name__),
        ) from None
    if response.status_code != 200:
        raise PredictionError(
            f"/predictions/{model} answered HTTP {response.status_code}: "
            f"{response.text.strip()[:300]!r}",
            reason("http-status", status=response.status_code),
        )
    try:
        return parse_prediction(response.content)
    except PredictionFormatError as error:
        raise PredictionError(
            str(error), reason("unreadable-body", body=error.body.strip()[:200])
        ) from error


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
    first_reason: Reason | None = None  # why the first failed request failed

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

    def one(index: int) -> tuple[int, int | None, PredictionError | None]:
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
            return index, None, error
        with lock:
            failures_in_a_row = 0
        return index, predicted, None

    correct = 0
    errors: list[str] = []
    first_reason: Reason | None = None
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
                first_reason = first_reason or error.reason
                if error.message not in errors and len(errors) < 5:
                    errors.append(error.message)
            elif predicted == label:
                correct += 1
            elif predicted is not None:
                wrong.append((index, label, predicted))
    if not_sent:
        errors.append(
            f"stopped after {STOP_AFTER_FAILURES} failed requests in a row; {not_sent} digits "
            "were not sent"
        )
    return HeldoutResult(digits.count, correct, errors, error_count, wrong, not_sent, first_reason)
