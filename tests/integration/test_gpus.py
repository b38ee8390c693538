"""GPU detection and the GPU-use probe on this engine (no NVIDIA runtime here: real answers)."""

from __future__ import annotations

import pytest

from grader.domain.settings import Settings
from grader.engine.baseimages import BaseImageProvider
from grader.engine.containers import RUN_LABEL, remove_labelled
from grader.engine.daemon import connect
from grader.engine.gpus import detect_gpus, torch_sees_cuda
from grader.engine.standins import BASE_IMAGE
from grader.stages.labsteps import ALPINE

pytestmark = pytest.mark.integration

LABELS = {RUN_LABEL: "test-gpus"}


def test_auto_detection_asks_the_engine():
    client = connect()
    runtimes = client.info().get("Runtimes") or {}
    detection = detect_gpus(client, BASE_IMAGE, LABELS)
    if "nvidia" in runtimes:
        assert detection.ids and detection.detail.endswith("visible in a probe container")
    else:
        assert detection.ids == ()
        assert detection.detail == (
            f"the engine has no NVIDIA runtime ({', '.join(sorted(runtimes))})"
        )
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}=test-gpus"}) == []


def test_a_gpu_request_fails_clearly_without_the_runtime():
    client = connect()
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    from grader.engine.containers import device_requests

    with pytest.raises(Exception) as error:
        client.containers.run(
            BASE_IMAGE, ["true"], remove=True, labels=LABELS, device_requests=device_requests("0")
        )
    remove_labelled(client, LABELS)
    assert "could not select device driver" in str(error.value)


def test_the_gpu_use_probe_gets_real_answers(tmp_path):
    client = connect()
    # Debian's torch is a CPU build: it never sees CUDA, GPU or not.
    assert torch_sees_cuda(client, BASE_IMAGE, "none", LABELS, tmp_path / "a.log") is False
    # An image without Python cannot say.
    BaseImageProvider(client, Settings.from_env(), print).ensure(ALPINE)
    assert torch_sees_cuda(client, ALPINE, "none", LABELS, tmp_path / "b.log") is None
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}=test-gpus"}) == []
