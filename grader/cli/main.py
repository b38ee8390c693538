"""The `grader` command: set up a host, prepare data, grade submissions."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from grader import __version__
from grader.domain.dataset import (
    load_dataset,
    prepare_from_mnist_dir,
    prepare_offline,
    read_hidden_dir,
)
from grader.domain.errors import DatasetError, GraderError
from grader.domain.hints import LANGUAGES, WORDS, check_table, default_language
from grader.domain.inert import terminal_safe
from grader.domain.intake import is_archive
from grader.domain.results import report_from_json, submission_from_json
from grader.domain.rubric import DEFAULT_RUBRIC, effective_rubric, format_rubric, load_rubric
from grader.domain.settings import CONFIG_NAME, Settings
from grader.domain.submission import discover, is_submission_dir, slugify
from grader.engine.baseimages import (
    SOURCES,
    BaseImageProvider,
    ImageSources,
    load_image_sources,
)
from grader.engine.daemon import connect, ensure_engine
from grader.engine.standins import (
    ALPINE_IMAGE,
    BASE_IMAGE,
    TORCHSERVE_IMAGE,
    ensure_alpine_image,
    ensure_base_image,
    ensure_torchserve_image,
)
from grader.pytest_plugin.options import add_argument as add_shared_option
from grader.pytest_plugin.progress import TerminalBoard

EXIT_BELOW_THRESHOLD = 1
EXIT_HARNESS_FAILED = 2


def say(message: str) -> None:
    print(f"[grader] {terminal_safe(message, keep_newlines=True)}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is for pytest; argparse would mix it with the submission paths.
    pytest_args = words[words.index("--") + 1 :] if "--" in words else []
    words = words[: words.index("--")] if "--" in words else words
    args = _parser().parse_args(words)
    args.pytest_args = pytest_args
    try:
        args.settings = Settings.from_env()
        return int(args.run(args))
    except GraderError as error:
        print(f"grader: error: {terminal_safe(str(error), keep_newlines=True)}", file=sys.stderr)
        return EXIT_HARNESS_FAILED
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grader",
        description="Grade lab 5 submissions (MNIST training and TorchServe) in real containers.",
    )
    parser.add_argument("--version", action="version", version=f"lab5-grader {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grade = commands.add_parser(
        "grade",
        help="grade submissions and write reports",
        epilog="Options after -- go to pytest, e.g. `grader grade submissions -- -x -k train`.",
    )
    grade.add_argument(
        "paths", nargs="*", default=["submissions"], metavar="PATH",
        help="submission folders or folders of submissions (default: submissions)",
    )  # fmt: skip
    add_shared_option(grade, "--report-dir")
    _grading_options(grade)
    grade.add_argument(
        "-j", "--jobs", default="auto", metavar="N",
        help="submissions graded at once (default auto: from the host's cores and memory)",
    )  # fmt: skip
    grade.add_argument(
        "--backend", choices=("local", "ray"), default="local",
        help="local: this host's engine (default); ray: the nodes of a Ray cluster",
    )  # fmt: skip
    grade.add_argument(
        "--ray-address", default="auto", metavar="HOST:PORT",
        help="the Ray cluster's head (default auto: RAY_ADDRESS or a local cluster)",
    )  # fmt: skip
    grade.add_argument(
        "--fail-under", type=float, default=None, metavar="SCORE",
        help="exit 1 when any graded submission scores below SCORE (for a student's own CI)",
    )  # fmt: skip
    grade.set_defaults(run=_grade)

    check = commands.add_parser(
        "check",
        help="check one submission before handing it in: the TA's checks, with hints",
        description="Grade one submission with the same checks and rubric as `grader grade`, "
        "then show a table and a hint for every failed check.",
    )
    check.add_argument(
        "path", nargs="?", default=".", metavar="PATH",
        help="the submission folder (default: the current folder)",
    )  # fmt: skip
    check.add_argument(
        "--report-dir", default=None,
        help="where reports and logs go (default: a folder per submission under the grader's "
        "home, printed at the end)",
    )  # fmt: skip
    check.add_argument(
        "--lang", choices=LANGUAGES, default=None,
        help="language of the hints: en or zh (default: from the locale)",
    )  # fmt: skip
    _grading_options(check)
    check.set_defaults(run=_check)

    doctor = commands.add_parser(
        "doctor",
        help="is this machine ready to grade? engine, disk, GPU, images, dataset, alpine",
        description="One line per item with ok or FAIL and a fix; exit 1 when grading cannot "
        "run here.",
    )
    doctor.add_argument("--profile", default="offline", help="check this profile's dataset")
    doctor.add_argument("--rubric", default=None, help="rubric TOML (default: the bundled one)")
    doctor.set_defaults(run=_doctor)

    images = commands.add_parser(
        "images",
        help="base images: where each comes from, get them all, load archives, list, prune",
    )
    image_commands = images.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    for action, text in (
        ("plan", "list every base image the submissions need and where each will come from"),
        ("prefetch", "get every base image the submissions need, before grading"),
    ):
        command = image_commands.add_parser(action, help=text)
        command.add_argument("paths", nargs="*", default=["submissions"], metavar="PATH")
        _image_options(command)
        command.set_defaults(run=_images)
    load = image_commands.add_parser("load", help="load every `docker save` archive of a folder")
    load.add_argument("folder", type=Path)
    load.set_defaults(run=_images)
    listing = image_commands.add_parser("list", help="the images the harness made or provided")
    listing.set_defaults(run=_images)
    prune = image_commands.add_parser(
        "prune", help="remove the images the harness made or provided, and nothing else"
    )
    prune.add_argument(
        "--standins", action="store_true", help="the offline stand-ins too (rebuilt when needed)"
    )
    prune.set_defaults(run=_images)

    setup = commands.add_parser(
        "setup", help="prepare this host: Docker engine, dataset, offline base image"
    )
    setup.add_argument("--profile", default="offline", help="prepare the data of this profile")
    setup.add_argument("--mnist-dir", type=Path, help="a full MNIST copy (for the full profile)")
    setup.add_argument(
        "--no-standins", action="store_true", help="do not build the offline base images"
    )
    setup.set_defaults(run=_setup)

    rubric = commands.add_parser("rubric", help="show the effective rubric of a profile")
    rubric_commands = rubric.add_subparsers(dest="rubric_command", required=True, metavar="ACTION")
    show = rubric_commands.add_parser("show", help="print checks, points, targets and limits")
    show.add_argument("--profile", default="offline", help="default: offline")
    show.add_argument("--rubric", default=None, help="rubric TOML (default: the bundled one)")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(run=_rubric_show)

    data = commands.add_parser("data", help="write the MNIST dataset a profile grades with")
    data.add_argument("--profile", default="offline", help="default: offline")
    data.add_argument("--mnist-dir", type=Path, help="a full MNIST copy (IDX files, plain or .gz)")
    data.add_argument("--force", action="store_true", help="prepare it again even if valid")
    data.set_defaults(run=_data)

    flags = commands.add_parser(
        "flags",
        help="integrity flags of graded submissions: list them, clear one after review",
    )
    flag_commands = flags.add_subparsers(dest="flags_command", required=True, metavar="ACTION")
    listing = flag_commands.add_parser("list", help="every flag with its id, standing or cleared")
    add_shared_option(listing, "--report-dir")
    listing.set_defaults(run=_flags)
    clear = flag_commands.add_parser(
        "clear",
        help="clear a flag after review: it stays cleared when results are graded or re-scored "
        "again, and the points it withheld return",
    )
    clear.add_argument(
        "flag_id", metavar="ID", help="SUBMISSION:FLAG, as `grader flags list` shows"
    )
    add_shared_option(clear, "--report-dir")
    clear.add_argument("--note", default="", help="why, kept with the decision")
    clear.set_defaults(run=_flags)
    return parser


def _grading_options(command: argparse.ArgumentParser) -> None:
    """Options `grade` and `check` share."""
    _image_options(command)
    # Declared in grader/pytest_plugin/options.py, with the plugin's options of the same names.
    for flag in ("--profile", "--rubric", "--gpus", "--seed", "--hidden-dir"):
        add_shared_option(command, flag)
    resume = command.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", action="store_true",
        help="take submissions whose stored results are still valid from them (the default: "
        "running the same command again resumes a killed batch)",
    )  # fmt: skip
    add_shared_option(resume, "--force")
    add_shared_option(command, "--keep-images")
    add_shared_option(command, "--image-cache-gb")
    command.add_argument(
        "--progress", choices=("auto", "board", "lines"), default="auto",
        help="board: a live board per worker; lines: one line per event, as in CI logs "
        "(default auto: board on a terminal)",
    )  # fmt: skip


def _image_options(command: argparse.ArgumentParser) -> None:
    """Where base images come from: the configuration file, then these over it."""
    command.add_argument(
        "--config", type=Path, default=None,
        help=f"grader configuration (default: {CONFIG_NAME} in the working folder, if any)",
    )  # fmt: skip
    command.add_argument(
        "--image-sources", default=None, metavar="LIST",
        help=f"sources to try, in order (default: {','.join(SOURCES)})",
    )  # fmt: skip
    command.add_argument(
        "--mirror", action="append", default=[], metavar="HOST",
        help="a registry mirror, e.g. mirror.example.edu or 127.0.0.1:5000 (repeatable)",
    )  # fmt: skip
    command.add_argument(
        "--image-archives", action="append", default=[], type=Path, metavar="FOLDER",
        help="a folder of `docker save` archives (repeatable)",
    )  # fmt: skip
    command.add_argument(
        "--no-standins", action="store_true", help="never build or use the offline stand-ins"
    )
    # The sources exactly as another host resolved them (a Ray node grades with the driver's).
    command.add_argument("--image-sources-json", default=None, help=argparse.SUPPRESS)


def _image_sources(args: argparse.Namespace) -> ImageSources:
    """Where base images come from, for local and Ray grading alike: the configuration, then
    the options over it; or, on a Ray node, what the driver resolved, as it is."""
    if args.image_sources_json is not None:
        return ImageSources.from_json(json.loads(args.image_sources_json))
    return load_image_sources(
        args.config,
        args.settings,
        order=args.image_sources,
        mirrors=args.mirror,
        archives=args.image_archives,
        standins=False if args.no_standins else None,
    )


def _images(args: argparse.Namespace) -> int:
    from grader.engine import images

    settings = args.settings
    client = connect()
    action = args.images_command
    if action == "load":
        for line in images.load_archives(client, settings, args.folder):
            print(line)
        return 0
    if action == "list":
        made = images.harness_images(client, settings)
        for image in made:
            print(f"{image.tag:<60} {image.size / 1e9:6.2f} GB  {image.origin}")
        if not made:
            print("the harness has made or provided no image on this engine")
        return 0
    if action == "prune":
        pruned = images.prune(client, settings, standins=args.standins)
        print(f"removed {len(pruned.removed)} image tag(s): {', '.join(pruned.removed) or '-'}")
        if pruned.spared:
            print(
                f"left {len(pruned.spared)} image tag(s) that grading runs still going (or not "
                f"known to have ended) on this host may use: {', '.join(pruned.spared)}; prune "
                "again when they have ended"
            )
        return 0
    provider = BaseImageProvider(client, settings, say, _image_sources(args))
    needed = images.needed_images(images.submissions_in([Path(p) for p in args.paths]))
    lines, missing = (images.plan if action == "plan" else images.prefetch)(provider, needed)
    for line in lines:  # image names come from the submissions' Dockerfiles
        print(terminal_safe(line))
    if not needed:
        print("the submissions name no base image")
    return EXIT_BELOW_THRESHOLD if missing else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _grade(args: argparse.Namespace) -> int:
    if getattr(args, "backend", "local") == "ray":
        return _grade_on_ray(args)
    import pytest

    # SIGTERM (a TA's `kill`, a CI timeout) ends a run as Ctrl-C does: results kept, containers
    # removed. After SIGKILL the next run reaps what is left.
    signal.signal(signal.SIGTERM, _interrupt)

    from grader.pytest_plugin.plugin import GRADING_RAN, checks_dir

    folder = checks_dir()
    pytest_args = [
        str(folder),
        "-c", str(folder / "pytest.ini"),
        "--rootdir", str(folder),
        "-p", "no:cacheprovider",
        # One line per check: progress a TA can follow, and room for the harness's own lines.
        "-v",
        # This process imported the harness before pytest loads it as a plugin; its checks do
        # not rely on assertion rewriting.
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
        "--profile", args.profile,
        "--report-dir", args.report_dir,
        "--gpus", args.gpus,
    ]  # fmt: skip
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        pytest_args += ["-p", "grader.pytest_plugin.plugin"]
    if args.rubric:
        pytest_args += ["--rubric", args.rubric]
    if args.seed is not None:
        pytest_args += ["--seed", str(args.seed)]
    if args.hidden_dir is not None:
        read_hidden_dir(args.hidden_dir)  # a bad folder stops here, before anything runs
        pytest_args += ["--hidden-dir", str(args.hidden_dir.resolve())]
    jobs = _jobs(args.jobs, args.paths)
    if jobs > 1:  # pytest-xdist; the plugin keeps each submission on one worker
        pytest_args += ["-n", str(jobs)]
    pytest_args += [flag for flag, on in (("--force", args.force),
                                          ("--keep-images", args.keep_images)) if on]  # fmt: skip
    pytest_args += ["--image-cache-gb", str(args.image_cache_gb)]
    pytest_args += ["--image-sources-json", json.dumps(_image_sources(args).to_json())]
    for path in args.paths:
        pytest_args += ["--submissions", path]
    board, stdout = None, sys.stdout
    if args.progress == "board" or (args.progress == "auto" and _is_terminal(sys.stdout)):
        board = TerminalBoard(sys.stdout)
    try:
        if board is not None:
            sys.stdout = board  # the board draws under all output
        code = pytest.main(pytest_args + args.pytest_args, plugins=[board] if board else [])
    finally:
        if board is not None:
            sys.stdout = stdout
            board.close()
    if code in GRADING_RAN:
        return 0 if args.fail_under is None else _check_fail_under(args)
    if code == pytest.ExitCode.INTERRUPTED:
        return 130
    return EXIT_HARNESS_FAILED


def _flags(args: argparse.Namespace) -> int:
    """`grader flags list|clear`: a TA's review of integrity flags, after grading."""
    from grader.domain.verdicts import clear
    from grader.reports.files import write_reports
    from grader.reports.store import clear_flag, load_cleared

    report_dir = Path(args.report_dir)
    results_file = report_dir / "results.json"
    try:
        report = report_from_json(json.loads(results_file.read_text()))
    except FileNotFoundError:
        raise GraderError(
            f"{results_file}: no results here; pass the --report-dir a grading run wrote to"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise GraderError(f"{results_file}: unreadable ({error})") from None
    if args.flags_command == "list":
        cleared = load_cleared(report_dir)
        count = 0
        for sid, listed in report.submissions.items():
            for flag in listed.integrity_flags:
                count += 1
                state = "cleared" if flag.id in cleared.get(sid, set()) else "STANDING"
                print(terminal_safe(f"{sid}:{flag.id}  {state}  {flag.message}"))
        if not count:
            print("no integrity flags")
        return 0
    sid, _, flag_id = args.flag_id.rpartition(":")
    result = report.submissions.get(sid)
    if result is None or flag_id not in {flag.id for flag in result.integrity_flags}:
        known = [f"{s}:{f.id}" for s, r in report.submissions.items() for f in r.integrity_flags]
        raise GraderError(
            f"no flag {args.flag_id!r} in {results_file}; its flags are: "
            f"{', '.join(known) or 'none'} (ids are SUBMISSION:FLAG)"
        )
    clear_flag(report_dir, sid, flag_id, args.note)
    clear(result, flag_id)
    write_reports(report, report_dir)
    print(terminal_safe(f"cleared {sid}:{flag_id}; score {result.score:g}/{result.max_score:g}"))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from grader.cli.doctor import examine, format_finding

    profile = load_rubric(Path(args.rubric) if args.rubric else DEFAULT_RUBRIC).profile(
        args.profile
    )
    failed = 0
    for finding in examine(args.settings, profile, say):
        failed += finding.status == "fail"
        for line in format_finding(finding):
            print(line, flush=True)
    if failed:
        print(f"grader doctor: {failed} problem{'s' * (failed > 1)} to fix before grading here")
        return EXIT_BELOW_THRESHOLD
    print("grader doctor: this machine can grade")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Grade one submission as `grade` would, then a table and hints a student can act on."""
    path = Path(args.path).resolve()
    if not (is_submission_dir(path) or is_archive(path)):
        raise GraderError(
            f"{path} is not a submission folder (it has no submission.toml, train/ or serve/); "
            "run `grader check` inside your submission, or give its path"
        )
    language = args.lang or default_language()
    if args.report_dir is None:
        args.report_dir = str(args.settings.home / "check" / slugify(path.name))
    args.paths, args.jobs, args.fail_under = [str(path)], "1", None
    code = _grade(args)
    results_file = Path(args.report_dir) / "results.json"
    if code != 0 or not results_file.is_file():
        return code
    graded = json.loads(results_file.read_text())["submissions"]
    if len(graded) != 1:
        return EXIT_HARNESS_FAILED
    result = submission_from_json(next(iter(graded.values())))
    for line in check_table(result, language):
        print(terminal_safe(line))
    print(f"\n{WORDS[language]['reports']}: {args.report_dir}")
    passed = all(check.status == "passed" for check in result.checks.values())
    return 0 if passed else EXIT_BELOW_THRESHOLD


def _grade_on_ray(args: argparse.Namespace) -> int:
    """The same grading, spread over a Ray cluster's nodes (see grader/cli/ray_backend.py)."""
    if args.hidden_dir is not None:
        raise GraderError(
            "--hidden-dir works with the local backend only: the nodes of a Ray cluster grade "
            "with their own dataset; grade without --backend ray"
        )
    try:
        import ray  # noqa: F401
    except ImportError:
        raise GraderError(
            "--backend ray needs Ray: pip install 'lab5-grader[ray]' (or pip install ray)"
        ) from None
    from grader.cli.ray_backend import TaskOptions, grade_batch
    from grader.reports.reuse import hidden_key
    from grader.reports.store import load_cleared

    signal.signal(signal.SIGTERM, _interrupt)
    settings = args.settings
    rubric = load_rubric(Path(args.rubric) if args.rubric else DEFAULT_RUBRIC)
    profile = rubric.profile(args.profile)
    dataset = load_dataset(settings.datasets_dir / profile.dataset)
    report_dir = Path(args.report_dir).resolve()
    options = TaskOptions(
        profile=profile.name,
        rubric_text=Path(args.rubric).read_text() if args.rubric else None,
        gpus=args.gpus,
        image_sources_json=json.dumps(_image_sources(args).to_json()),
        cpus=profile.limits.cpus,
        memory_mb=profile.limits.memory_mb,
        wants_gpu=args.gpus not in ("auto", "none"),
        # One seed for the whole batch, so that every node sends the same hidden digits.
        seed=args.seed if args.seed is not None else secrets.randbelow(1 << 32),
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    grade_batch(
        args.ray_address, discover([Path(p) for p in args.paths]), rubric, profile, dataset,
        report_dir, options, force=args.force, hidden=hidden_key(args.seed, None),
        cleared=load_cleared(report_dir), say=say,
    )  # fmt: skip
    return 0 if args.fail_under is None else _check_fail_under(args)


def _is_terminal(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM", "dumb") != "dumb"


def _jobs(requested: str, paths: list[str]) -> int:
    """How many submissions to grade at once: N, or auto.

    auto is one more than the cores (much of grading waits on server start-ups and on image
    builds in the engine, measured: 8 submissions on 2 cores took 118 s with 3 workers and
    152 s with 2), with 3 GiB of memory for each, and never more than there are submissions.
    """
    try:
        submissions = len(discover([Path(p) for p in paths]))
    except GraderError:
        submissions = 1  # the plugin reports the problem
    if requested != "auto":
        if not requested.isdigit() or int(requested) < 1:
            raise GraderError(f"-j {requested!r}: give a whole number of at least 1, or auto")
        return min(int(requested), max(1, submissions))
    cores = os.cpu_count() or 1
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return max(1, min(cores + 1, int(memory_gib // 3), submissions))


def _check_fail_under(args: argparse.Namespace) -> int:
    """EXIT_BELOW_THRESHOLD when a graded submission scored below --fail-under, else 0."""
    results = json.loads((Path(args.report_dir) / "results.json").read_text())
    # A submission the infrastructure could not grade fully has no score to hold against it.
    unfinished = {
        sid
        for sid, result in results["submissions"].items()
        if submission_from_json(result).infrastructure_errors
    }
    if unfinished:
        print(
            f"grader: --fail-under {args.fail_under:g} leaves out "
            f"{terminal_safe(', '.join(sorted(unfinished)))}: "
            "infrastructure errors, grade again",
            file=sys.stderr,
        )
    below = [
        f"{sid} ({result['score']:g}/{result['max_score']:g})"
        for sid, result in results["submissions"].items()
        if result["score"] < args.fail_under and sid not in unfinished
    ]
    if below:
        print(
            f"grader: {len(below)} submission{'s' * (len(below) > 1)} scored below "
            f"--fail-under {args.fail_under:g}: {terminal_safe(', '.join(below))}",
            file=sys.stderr,
        )
        return EXIT_BELOW_THRESHOLD
    return 0


def _rubric_show(args: argparse.Namespace) -> int:
    rubric = load_rubric(Path(args.rubric) if args.rubric else DEFAULT_RUBRIC)
    profile = rubric.profile(args.profile)
    if args.json:
        print(json.dumps(effective_rubric(rubric, profile), indent=2))
    else:
        print(format_rubric(rubric, profile))
    return 0


def _setup(args: argparse.Namespace) -> int:
    settings = args.settings
    started = time.monotonic()
    client = ensure_engine(settings, say)
    info = client.version()
    say(f"Docker engine {info.get('Version')} (API {info.get('ApiVersion')}) answers")
    _ensure_dataset(settings, args.profile, args.mnist_dir, force=False)
    if not args.no_standins:
        for name, ensure in ((BASE_IMAGE, ensure_base_image),
                             (TORCHSERVE_IMAGE, ensure_torchserve_image),
                             (ALPINE_IMAGE, ensure_alpine_image)):  # fmt: skip
            ensure(client, settings, say)
            say(f"offline base image ready: {name}")
    say(f"set-up done in {time.monotonic() - started:.1f} s (state in {settings.home})")
    return 0


def _data(args: argparse.Namespace) -> int:
    _ensure_dataset(args.settings, args.profile, args.mnist_dir, force=args.force)
    return 0


def _ensure_dataset(
    settings: Settings, profile_name: str, mnist_dir: Path | None, force: bool
) -> None:
    profile = load_rubric(DEFAULT_RUBRIC).profile(profile_name)
    dest = settings.datasets_dir / profile.dataset
    if not force and mnist_dir is None:
        try:
            dataset = load_dataset(dest)
        except DatasetError as error:
            if profile.dataset != "offline":
                raise DatasetError(
                    f"{error}; for the {profile.name} profile run "
                    f"`grader data --profile {profile.name} --mnist-dir DIR` with a full MNIST copy"
                ) from None
            if (dest / "dataset.json").exists():
                say(f"dataset at {dest} is not valid ({error}); preparing it again")
        else:
            say(f"dataset {profile.dataset} ready: {dataset.counts} from {dataset.source}")
            return
    if mnist_dir is not None:
        dataset = prepare_from_mnist_dir(dest, mnist_dir)
    elif profile.dataset == "offline":
        dataset = prepare_offline(dest, settings.downloads_dir)
    else:
        raise DatasetError(
            f"the {profile.name} profile needs a full MNIST copy: pass --mnist-dir DIR"
        )
    say(f"dataset {profile.dataset} written to {dest}: {dataset.counts} from {dataset.source}")
