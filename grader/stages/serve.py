"""The serving stage: the inference image built with the model handed over, the server started
behind its forwarder, and the waits for it to answer done once.

The probes of a running server (health, readiness, predictions) are in grader/stages/serving.py;
this stage decides when they run and remembers their outcomes, so every check of a submission
reads the same wait instead of waiting out `server_ready_seconds` again.
"""

from __future__ import annotations

from pathlib import Path

from grader.domain.reasons import Failure, reason
from grader.domain.submission import Submission, slugify
from grader.engine.containers import ResourceLimits, own_network, start_server, stop_server
from grader.engine.standins import BASE_IMAGE
from grader.stages.build import ImageBuild, ImageBuilder
from grader.stages.serving import (
    INFERENCE_PORT,
    MANAGEMENT_PORT,
    SERVER_PORTS,
    Outcome,
    Server,
    serve_context,
    wait_healthy,
    wait_model_ready,
)
from grader.stages.torchserve import TorchServeAPI
from grader.stages.train import TrainStage
from grader.stages.workspace import Workspace

SERVER_LOG = "server.log"
# A server runs until the harness stops it: `start_server` sets no wall-time limit, so the
# limits' wall time is not read (the stage's waits are bounded by `server_ready_seconds`).
UNTIL_STOPPED_S = 0.0


class ServeStage:
    """Builds each submission's inference image with its trained (or committed) model, starts
    it, and waits once for /ping and for a READY worker of the model."""

    def __init__(self, workspace: Workspace, builder: ImageBuilder, trainer: TrainStage) -> None:
        self.workspace = workspace
        self.builder = builder
        self.trainer = trainer
        self._servers: dict[str, Server] = {}
        self._waits: dict[tuple[str, str], Outcome] = {}

    def build(self, submission: Submission) -> ImageBuild:
        """The inference image, built from a copy of the serve context holding the model."""
        return self.builder.once(submission, "serve", lambda: self._build(submission))

    def _build(self, submission: Submission) -> ImageBuild:
        serve = submission.serve
        tag = self.workspace.image_tag(submission, "serve")
        if not serve.context.is_dir():
            shown = submission.shown(serve.context)
            missing = f"build context {shown}/ is missing"
            return ImageBuild.not_started(
                tag, missing, reason=reason("context-missing", folder=f"{shown}/")
            )
        prepared = serve_context(
            serve.context,
            serve.model_path,
            self.trainer.trained_model(submission),
            self.workspace.scratch(submission, "serve-context"),
        )
        if isinstance(prepared, Failure):
            return ImageBuild.not_started(tag, prepared.message, reason=prepared.reason)
        context = prepared.folder
        if not serve.dockerfile.is_relative_to(serve.context):
            shown = submission.shown(serve.dockerfile)
            outside = f"{shown} is outside the serve context"
            return ImageBuild.not_started(
                tag, outside, reason=reason("dockerfile-outside", file=str(shown))
            )
        dockerfile = context / serve.dockerfile.relative_to(serve.context)
        shown = submission.shown(serve.dockerfile)
        return self.builder.build(
            submission, "serve", context, dockerfile, shown, prepared.model_origin
        )

    def server(self, submission: Submission) -> Server:
        """The started inference container (the serving build must have succeeded)."""
        if submission.id not in self._servers:
            build = self.build(submission)
            assert build.ok, "server needs a successful serving build"
            workspace = self.workspace
            limits = workspace.profile.limits
            labels = workspace.labels(submission.id, "serve")
            # The harness reaches the server only through its forwarder, made from the image
            # the stand-ins start from (present wherever grading runs).
            relay_image = workspace.base_images.ensure(BASE_IMAGE).reference
            running = start_server(
                workspace.client,
                image=build.tag,
                ports=SERVER_PORTS,
                limits=ResourceLimits(
                    cpus=limits.cpus,
                    memory_mb=limits.memory_mb,
                    pids=limits.pids,
                    wall_seconds=UNTIL_STOPPED_S,
                    threads=workspace.threads,
                ),
                labels=labels,
                network=own_network(
                    workspace.client, f"lab5-grader-{workspace.run_id}-{submission.slug}", labels
                ),
                relay_image=relay_image,
                forwarder_labels=workspace.labels(submission.id, "forwarder"),
                gpus=workspace.gpus,
            )
            published = {INFERENCE_PORT, MANAGEMENT_PORT} <= running.host_ports.keys()
            api = (
                TorchServeAPI(
                    running.url(INFERENCE_PORT),
                    running.url(MANAGEMENT_PORT),
                    predict_timeout_s=limits.predict_timeout_seconds,
                )
                if published
                else None
            )
            self._servers[submission.id] = Server(running, api)
        return self._servers[submission.id]

    def healthy(self, submission: Submission) -> Outcome:
        key = (submission.id, "healthy")
        if key not in self._waits:
            timeout = self.workspace.profile.limits.server_ready_seconds
            self._waits[key] = wait_healthy(self.server(submission), timeout)
        return self._waits[key]

    def model_ready(self, submission: Submission) -> Outcome:
        key = (submission.id, "ready")
        if key not in self._waits:
            timeout = self.workspace.profile.limits.server_ready_seconds
            self._waits[key] = wait_model_ready(
                self.server(submission), submission.serve.model_name, timeout
            )
        return self._waits[key]

    def stop(self, submission: Submission) -> None:
        """Stop the submission's server, if it started, keeping its log with the artifacts."""
        server = self._servers.pop(submission.id, None)
        if server is not None:
            stop_server(server.running, self.workspace.artifacts(submission) / SERVER_LOG)

    def stop_all(self) -> None:
        """Stop every server still running, keeping their logs."""
        for submission_id, server in self._servers.items():
            stop_server(server.running, self._log_of(submission_id))
        self._servers.clear()

    def _log_of(self, submission_id: str) -> Path:
        return self.workspace.artifacts_root / slugify(submission_id) / SERVER_LOG
