"""Progress lines and the live terminal board."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from grader.domain.results import CheckResult, SubmissionResult
from grader.pytest_plugin.progress import Progress, TerminalBoard, check_of_nodeid


def _report(nodeid: str, worker: str | None) -> SimpleNamespace:
    node = SimpleNamespace(gateway=SimpleNamespace(id=worker)) if worker else None
    return SimpleNamespace(nodeid=nodeid, node=node)


def test_a_node_id_names_its_rubric_check():
    nodeid = "grader/pytest_plugin/checks/test_train.py::test_run[alice]"
    assert check_of_nodeid(nodeid) == "train.run"
    assert check_of_nodeid("test_serve.py::test_heldout_accuracy[a[1]]") == (
        "serve.heldout_accuracy"
    )


def test_progress_lines():
    lines: list[str] = []
    progress = Progress(lines.append)
    progress.total = 2
    progress.check_started("test_train.py::test_build[alice]")
    progress.seen(_report("test_train.py::test_build[alice]", "gw1"))
    progress.seen(_report("test_train.py::test_run[alice]", "gw1"))  # told once per submission
    result = SubmissionResult("alice", "/a", "/r/a")
    result.checks["train.build"] = CheckResult("train.build", "Builds", "passed", 10, 10)
    progress.finished(result)
    assert lines[0] == "grading alice on gw1"
    assert lines[1].startswith("[1/2] alice: 10/10 in 0 s (0 s elapsed, about 0 s left")
    assert len(lines) == 2


def test_the_board_has_a_row_per_worker_and_a_bar():
    progress = Progress(lambda line: None)
    progress.total = 4
    progress.done = 1
    progress.started_at -= 30
    for sid, worker, check in (("bob", "gw1", "test_serve.py::test_ping"),
                               ("alice", "gw0", "test_train.py::test_run")):  # fmt: skip
        progress.check_started(f"{check}[{sid}]")
        progress.seen(_report(f"{check}[{sid}]", worker))
    progress.running["alice"].check_started -= 12
    rows = progress.board(200)
    assert rows[0].split()[:5] == ["gw0", "alice", "train.run", "12", "s"]
    assert rows[1].split()[:3] == ["gw1", "bob", "serve.ping"]
    assert rows[2].startswith(" [#####...............] 1/4 graded, 30 s elapsed, about 90 s left")
    assert all(len(row) <= 40 for row in progress.board(40))


def test_the_board_stays_under_the_output_and_is_erased_before_text(tmp_path: Path):
    terminal_file = tmp_path / "terminal"
    with open(terminal_file, "w") as terminal:
        board = TerminalBoard(terminal, interval=60)
        board.write("before\n")
        board.show(lambda width: ["row one", "row two"])
        board.write("PASSED ")  # the middle of a line: no board until the line ends
        board.write("test_x\n")
        board.close()
    text = terminal_file.read_text()
    # ECMA-48: CSI 2 F (cursor to the start of the line 2 rows up), CSI J (erase to the end)
    erase = "\x1b[2F\x1b[J"
    assert text == (f"before\nrow one\nrow two\n{erase}PASSED test_x\nrow one\nrow two\n{erase}")


def test_the_board_ticks(tmp_path: Path):
    terminal_file = tmp_path / "terminal"
    ticks = []
    with open(terminal_file, "w") as terminal:
        board = TerminalBoard(terminal, interval=0.05)
        board.show(lambda width: [f"tick {len(ticks)}"] if not ticks.append(1) else [])
        time.sleep(0.5)
        board.close()
    assert len(ticks) >= 3
    assert "tick 2\n" in terminal_file.read_text()
