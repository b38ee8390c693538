"""Archives handed in are graded like folders; a dangerous one is refused, the batch goes on."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.cli import ROOT, run_grader

pytestmark = pytest.mark.integration


def test_archives_are_graded_and_a_dangerous_one_does_not_stop_the_batch(tmp_path):
    batch = tmp_path / "handed-in"
    batch.mkdir()
    shutil.make_archive(str(batch / "broken-build"), "zip", ROOT / "submissions", "broken-build")
    with tarfile.open(batch / "evil.tar.gz", "w:gz") as archive:
        escape = tarfile.TarInfo("../../../tmp/lab5-escaped")
        escape.size = 4
        archive.addfile(escape, io.BytesIO(b"boom"))
    done = run_grader("grade", str(batch), "--report-dir", str(tmp_path / "r"), "-j", "1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "r" / "results.json").read_text())["submissions"]
    assert results["broken-build"]["score"] == 5  # as the folder scores
    evil = results["evil"]
    assert evil["score"] == 0
    assert evil["checks"]["train.dockerfile"]["message"] == (
        "evil.tar.gz: refused, nothing was unpacked: entry '../../../tmp/lab5-escaped' leaves the "
        "submission folder; hand in an archive of regular files inside one folder"
    )
    assert not (tmp_path / "r" / "intake" / "evil").exists()
    assert not Path("/tmp/lab5-escaped").exists()
