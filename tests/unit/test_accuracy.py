from __future__ import annotations

import json

import pytest

from grader.domain.accuracy import from_log, from_metrics, training_curve


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("Test set: Average loss: 0.0267, Accuracy: 9913/10000 (99%)", 0.9913),
        ("Test accuracy: 98.7%", 0.987),
        ("epoch 5 accuracy=0.9870", 0.987),
        ("val_acc 0.95", 0.95),
        ("Accuracy of the network on the 10000 test images: 98 %", 0.98),
        ("test_acc: 97.5", 0.975),
    ],
)
def test_common_log_formats(line, value):
    reported = from_log(f"starting\n{line}\ndone\n")
    assert reported is not None
    assert reported.value == pytest.approx(value)
    assert reported.source == "training log line 2"


def test_last_evaluation_line_wins_over_later_training_lines():
    log = "\n".join(
        [
            "Test set: Average loss: 0.3, Accuracy: 900/1000 (90%)",
            "Test set: Average loss: 0.1, Accuracy: 970/1000 (97%)",
            "Train Epoch: 3 accuracy 0.99",
        ]
    )
    reported = from_log(log)
    assert reported is not None and reported.value == pytest.approx(0.97)


def test_training_accuracy_is_used_when_nothing_else_is_reported():
    reported = from_log("Train Epoch: 1 acc: 0.91\n")
    assert reported is not None and reported.value == pytest.approx(0.91)


def test_no_accuracy_in_log():
    assert from_log("Train Epoch: 1 Loss: 0.3\nsaved model\n") is None


def test_metrics_json(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"test_accuracy": 0.9812}))
    reported = from_metrics(path)
    assert reported is not None and not isinstance(reported, str)
    assert reported.value == pytest.approx(0.9812)
    assert reported.source == "metrics.json"


def test_metrics_json_absent(tmp_path):
    assert from_metrics(tmp_path / "metrics.json") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "metrics.json is not valid JSON"),
        ('{"accuracy": 0.9}', 'metrics.json has no numeric "test_accuracy" (got None)'),
        ('{"test_accuracy": "0.9"}', "has no numeric \"test_accuracy\" (got '0.9')"),
        ('{"test_accuracy": 98.1}', "write it as a fraction"),
        ("[0.9]", "has no numeric"),
    ],
)
def test_metrics_json_problems_are_explained(tmp_path, content, problem):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    result = from_metrics(path)
    assert isinstance(result, str)
    assert problem in result


def test_training_curve():
    log = "\n".join(
        [
            "Train Epoch: 1 [0/3000 (0%)]\tLoss: 2.301",
            "Train Epoch: 1 [1280/3000 (43%)]\tLoss: 0.512",
            "",
            "Test set: Average loss: 0.2458, Accuracy: 930/1000 (93%)",
            "Train Epoch: 2 [0/3000 (0%)]\tLoss: 1e-3",
            "Test set: Average loss: 0.1860, Accuracy: 951/1000 (95%)",
        ]
    )
    assert training_curve(log) == {"loss": [2.301, 0.512, 0.001], "accuracy": [0.93, 0.951]}
    assert training_curve("") == {"loss": [], "accuracy": []}
