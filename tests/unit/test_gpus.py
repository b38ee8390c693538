"""GPU selection and how GPUs are spread over parallel workers."""

from __future__ import annotations

import pytest

from grader.domain.verdicts import gpu_use_verdict
from grader.engine.gpus import (
    GpuDetection,
    check_selection,
    chosen_gpus,
    describe_device,
    gpus_for_worker,
)

FOUR = GpuDetection(("0", "1", "2", "3"), "4 GPU(s) visible in a probe container")
NONE = GpuDetection((), "the engine has no NVIDIA runtime (runc)")


@pytest.mark.parametrize("selection", ["auto", "none", "all", "0", "1,3", "0, 2"])
def test_accepted_selections(selection):
    assert check_selection(selection) == selection


@pytest.mark.parametrize("selection", ["many", "", "1,", "gpu0", "-1"])
def test_rejected_selections(selection):
    with pytest.raises(ValueError) as error:
        check_selection(selection)
    assert str(error.value) == f"--gpus {selection!r}: use auto, none, all or GPU ids such as 0,1"


def test_what_each_selection_chooses():
    assert chosen_gpus("auto", FOUR) == ("0", "1", "2", "3")
    assert chosen_gpus("all", FOUR) == ("0", "1", "2", "3")
    assert chosen_gpus("auto", NONE) == ()
    assert chosen_gpus("none", FOUR) == ()
    assert chosen_gpus("1, 3", FOUR) == ("1", "3")


def test_each_worker_gets_its_own_gpu_while_there_are_enough():
    gpus = ("0", "1", "2", "3")
    assert gpus_for_worker(gpus, 0, 1) == "0,1,2,3"  # one worker: every GPU
    assert [gpus_for_worker(gpus, worker, 4) for worker in range(4)] == ["0", "1", "2", "3"]
    assert [gpus_for_worker(("1", "3"), w, 3) for w in range(3)] == ["1", "3", "1"]
    assert gpus_for_worker((), 2, 4) == "none"


def test_results_name_the_device():
    assert describe_device("none") == "cpu"
    assert describe_device("2") == "gpu 2"


def test_a_training_image_blind_to_cuda_is_flagged_against_the_student():
    kind, text = gpu_use_verdict(False, "GPU 0", [])
    assert kind == "flag"
    assert "GPU 0" in text and "torch.cuda.is_available() is False" in text


def test_the_harness_own_cpu_stand_in_is_never_held_against_the_student():
    """A GPU host without registry access builds on the CPU-only stand-in: the missing CUDA is
    the harness's doing, recorded as an infrastructure note, not a flag."""
    verdict = gpu_use_verdict(False, "GPU 0", ["pytorch/pytorch:2.0.1-cuda11.7-cudnn8-runtime"])
    assert verdict is not None
    kind, text = verdict
    assert kind == "note"
    assert text.startswith("infrastructure")
    assert "pytorch/pytorch:2.0.1-cuda11.7-cudnn8-runtime" in text


def test_an_image_that_sees_cuda_gets_nothing_and_one_that_cannot_tell_a_note():
    assert gpu_use_verdict(True, "GPU 0", []) is None
    assert gpu_use_verdict(True, "GPU 0", ["pytorch/pytorch:latest"]) is None
    kind, _ = gpu_use_verdict(None, "GPU 0", [])
    assert kind == "note"
