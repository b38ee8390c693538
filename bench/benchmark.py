"""Batch-grading benchmark: the harness against a naive serial script, in one run.

    .venv/bin/python bench/benchmark.py          (after `./lab5 setup`)

Eight generated submissions (five good variants of the reference; a server bound to 127.0.0.1,
a training that crashes, an image that does not build) are graded by the harness with `-j auto`,
with `-j 1`, by `naive_grade.sh` (serial docker build / run / curl with fixed waits), and once
more by the harness from its stored results. For each it prints the wall time, the CPU seconds
all containers used (the engine's cgroup accounting), the lower bound that implies on this host
(container CPU seconds / cores) and the wall time's ratio to it; and, to show where the rest of
the time goes, the CPU seconds the whole host was busy (containers, the engine, the harness).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from grader.domain.dataset import ROWS, load_dataset
from grader.domain.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference"
CPU_COUNTERS = (
    Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"),  # cgroup v1, cgroupfs driver
    Path("/sys/fs/cgroup/docker/cpu.stat"),  # cgroup v2, cgroupfs driver
)


def container_cpu_seconds() -> float:
    """CPU time used so far by every container of the engine (including removed ones)."""
    for counter in CPU_COUNTERS:
        if counter.is_file():
            text = counter.read_text()
            if counter.name == "cpu.stat":
                usage = dict(line.split() for line in text.splitlines())
                return int(usage["usage_usec"]) / 1e6
            return int(text) / 1e9
    raise SystemExit("no cgroup CPU accounting for Docker containers found on this host")


def host_busy_seconds() -> float:
    """CPU time the whole host has been busy since boot (all but idle and I/O wait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def make_submissions(folder: Path) -> None:
    """Five good variants of the reference and three broken submissions of the bundled kinds."""
    for index in range(5):
        target = folder / f"good-{index}"
        shutil.copytree(REFERENCE, target)
        dockerfile = target / "train" / "Dockerfile"
        dockerfile.write_text(
            dockerfile.read_text().replace(
                'CMD ["python", "train.py", "--epochs", "6"]',
                f'CMD ["python", "train.py", "--epochs", "{5 + index % 2}", "--seed", "{index}"]',
            )
        )
        (target / "submission.toml").write_text(f'[student]\nid = "good-{index}"\n')
    localhost = folder / "serve-localhost"
    shutil.copytree(REFERENCE, localhost)
    config = localhost / "serve" / "config.properties"
    config.write_text(config.read_text().replace("0.0.0.0", "127.0.0.1"))
    (localhost / "submission.toml").unlink()
    crash = folder / "train-crashes"
    shutil.copytree(REFERENCE, crash)
    script = crash / "train" / "train.py"
    script.write_text(
        script.read_text().replace(
            "    model = Net()", "    raise SystemExit(1)\n    model = Net()"
        )
    )
    (crash / "submission.toml").unlink()
    broken = folder / "broken-build"
    shutil.copytree(REFERENCE, broken)
    dockerfile = broken / "train" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace("COPY model.py", "COPY requirements.txt model.py")
    )
    (broken / "submission.toml").unlink()


def hidden_pngs(folder: Path) -> Path:
    digits = load_dataset(Settings.from_env().datasets_dir / "offline").hidden_digits()
    folder.mkdir(parents=True)
    for index in range(digits.count):
        image = Image.frombytes("L", (ROWS, ROWS), digits.image(index))
        image.save(folder / f"{index:04d}_{digits.labels[index]}.png")
    return folder


def timed(command: list[str], log: Path) -> tuple[float, float, float]:
    """Wall seconds, container CPU seconds and host CPU seconds of a command."""
    cpu, host, started = container_cpu_seconds(), host_busy_seconds(), time.monotonic()
    with open(log, "w") as output:
        subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - started
    return wall, container_cpu_seconds() - cpu, host_busy_seconds() - host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="lab5-bench-"))
    submissions = work / "submissions"
    make_submissions(submissions)
    hidden = hidden_pngs(work / "hidden")
    data = Settings.from_env().datasets_dir / "offline" / "visible"
    grader = [sys.executable, "-m", "grader", "grade", str(submissions), "--progress", "lines"]
    naive = [
        "bash", str(ROOT / "bench" / "naive_grade.sh"),
        str(submissions), str(data), str(hidden), str(work / "naive"),
    ]  # fmt: skip
    runs = {
        "harness -j auto": [*grader, "--report-dir", str(work / "r-auto"), "--force"],
        "harness -j 1": [*grader, "-j", "1", "--report-dir", str(work / "r-serial"), "--force"],
        "naive serial script": naive,
        "harness, stored results": [*grader, "--report-dir", str(work / "r-auto")],
    }
    figures = {}
    for name, command in runs.items():
        print(f"running: {name} ...", flush=True)
        figures[name] = timed(command, work / f"{name.split()[0]}-{len(figures)}.log")
    print(f"\n8 submissions, {cores} cores\n")
    print(
        f"{'run':<26}{'wall s':>8}{'containers':>12}{'bound':>8}{'wall/bound':>12}"
        f"{'host CPU s':>12}{'wall/host bound':>17}"
    )
    print(f"{'':<26}{'':>8}{'CPU s':>12}{'s':>8}{'':>12}{'':>12}{'':>17}")
    for name, (wall, cpu, host) in figures.items():
        bound, host_bound = cpu / cores, host / cores
        ratio = f"{wall / bound:.2f}x" if bound > 1 else "-"
        host_ratio = f"{wall / host_bound:.2f}x" if host_bound > 1 else "-"
        print(
            f"{name:<26}{wall:>8.1f}{cpu:>12.1f}{bound:>8.1f}{ratio:>12}"
            f"{host:>12.1f}{host_ratio:>17}"
        )
    harness = figures["harness -j auto"][0]
    print()
    print(f"naive script / harness -j auto:     {figures['naive serial script'][0] / harness:.2f}x")
    print(f"harness -j 1 / harness -j auto:     {figures['harness -j 1'][0] / harness:.2f}x")
    print(
        f"stored-results regrade / first run: {figures['harness, stored results'][0] / harness:.1%}"
    )
    if args.keep:
        print(f"\nwork folder: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
