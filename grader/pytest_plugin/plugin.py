"""The pytest plugin that grades submissions: its options, hooks and fixtures.

Registered through the `pytest11` entry point, so
`pytest --submissions DIR --pyargs grader.pytest_plugin.checks` works in any folder;
`grader grade` runs exactly that. Without `--submissions` the plugin only adds its options and
the `check` marker, and stays out of the way. With it, `pytest_configure` takes the submissions
in and registers a `GradingPlugin`, whose hooks delegate to the run's state (`GradingRun`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.workermanage import WorkerController

from grader.domain.dataset import read_hidden_dir
from grader.domain.errors import GraderError
from grader.domain.handins import take_in_all
from grader.domain.inert import terminal_safe
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric
from grader.domain.settings import Settings
from grader.domain.submission import discover
from grader.engine.gpus import check_selection
from grader.pytest_plugin.checking import (
    CHECK_MARKER,
    CheckFailure,
    check,
    check_id_of,
    classify_exception,
    fail_check,
    outcome_of,
    reason_of,
)
from grader.pytest_plugin.options import add_pytest_options
from grader.pytest_plugin.parallel import SubmissionScheduling
from grader.pytest_plugin.progress import BOARD_KEY, Progress
from grader.pytest_plugin.registered import validate_collection
from grader.pytest_plugin.run import GradingRun, RunOptions, WorkerShare, claim_run
from grader.pytest_plugin.run_results import FINISHED_PROPERTY
from grader.pytest_plugin.submission_grading import SubmissionGrading
from grader.reports.files import summary_lines

# What check modules import from here.
__all__ = ["CheckFailure", "SubmissionGrading", "check", "classify_exception", "fail_check"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lab5-grader", "lab5-grader (grading lab 5 submissions)")
    add_pytest_options(group)  # grader/pytest_plugin/options.py, shared with `grader grade`


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{CHECK_MARKER}(id): the rubric check a test grades")
    if not config.getoption("submissions"):
        return
    worker_input = getattr(config, "workerinput", None)
    share = WorkerShare.from_workerinput(worker_input) if worker_input is not None else None
    try:
        rubric = load_rubric(Path(config.getoption("rubric") or DEFAULT_RUBRIC))
        profile = rubric.profile(config.getoption("profile"))
        report_dir = Path(config.getoption("report_dir"))
        paths = discover([Path(p) for p in config.getoption("submissions")])
        # The host's settings, read from the environment once per process and passed down.
        settings = Settings.from_env()
        run = claim_run(settings, share)
        # ".intake": no submission's scratch folder (named by its slug) can be called that
        staging = settings.run_dir(run[0]) / ".intake"
        intakes = take_in_all(paths, report_dir.resolve() / "intake", staging)
    except GraderError as error:
        raise pytest.UsageError(str(error)) from None
    try:
        gpus = check_selection(config.getoption("gpus"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    seed = config.getoption("seed")  # a whole number of at least 0 (options.whole_number)
    hidden_dir = config.getoption("hidden_dir")
    if hidden_dir is not None:
        try:
            read_hidden_dir(Path(hidden_dir))
        except GraderError as error:
            raise pytest.UsageError(str(error)) from None
    options = RunOptions(
        report_dir=report_dir.resolve(),
        gpus=gpus,
        seed=seed,
        hidden_dir=Path(hidden_dir).resolve() if hidden_dir else None,
        force=bool(config.getoption("force")),
        keep_images=bool(config.getoption("keep_images")),
        image_cache_gb=float(config.getoption("image_cache_gb")),
        image_sources_json=config.getoption("image_sources_json"),
    )
    say = _teller(config)
    grading_run = GradingRun(
        settings=settings,
        rubric=rubric,
        profile=profile,
        intakes=intakes,
        options=options,
        run=run,
        workers=int(getattr(config.option, "numprocesses", 0) or 1),
        share=share,
        say=say,
    )
    plugin = GradingPlugin(config, grading_run, Progress(say))
    config.stash[run_key] = grading_run
    config.pluginmanager.register(plugin, "lab5-grader-session")


def _teller(config: pytest.Config) -> Callable[[str], None]:
    """How the run tells the TA what it does: a `[grader]` line on the terminal, at once."""

    def say(message: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        # Progress goes to the terminal at once, not into the captured output of the check.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"[grader] {terminal_safe(message, keep_newlines=True)}")

    return say


run_key = pytest.StashKey[GradingRun]()


class GradingPlugin:
    """The hooks of a grading session, registered as a plugin object; the state is the run's."""

    def __init__(self, config: pytest.Config, run: GradingRun, progress: Progress) -> None:
        self.config = config
        self.run = run
        self.progress = progress

    # --- session -------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before xdist starts workers: they need the GPUs chosen
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.run.start()
        reused = self.run.results.reused if self.run.results else []
        self.progress.total = len(self.run.intakes) - len(reused)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(
        self, config: pytest.Config, log: Producer | None
    ) -> SubmissionScheduling:
        return SubmissionScheduling(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: WorkerController) -> None:
        """pytest-xdist: every worker grades under the controller's run id."""
        node.workerinput.update(self.run.share_with_workers().to_workerinput())

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        results = self.run.results
        if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and results and results.reused:
            session.exitstatus = pytest.ExitCode.OK  # every submission came from stored results
        self.run.close()

    # --- collection ----------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "grading" in metafunc.fixturenames:
            ids = list(self.run.intakes)
            metafunc.parametrize("grading_intake", ids, ids=ids, scope="function")

    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        validate_collection(items, CHECK_MARKER)
        order = {check_id: index for index, check_id in enumerate(self.run.rubric.checks)}
        submissions = {sid: index for index, sid in enumerate(self.run.intakes)}

        def key(item: pytest.Item) -> tuple[int, int]:
            check_id = check_id_of(item)
            sid = _intake_id(item)
            if check_id is None or sid is None:
                return (len(submissions), 0)
            return (submissions[sid], order[check_id])

        items.sort(key=key)  # one submission's checks together, in rubric order
        reused = self.run.results.reused if self.run.results else []
        if reused:
            skipped = [item for item in items if _intake_id(item) in reused]
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if _intake_id(item) not in reused]

    # --- checks --------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, object, object]:
        """Run a check under its deadline (grader/pytest_plugin/deadlines.py)."""
        intake_id = _intake_id(pyfuncitem)
        check_id = check_id_of(pyfuncitem)
        deadline = None
        if intake_id is not None and check_id is not None:
            deadline = self.run.deadline_for(intake_id, check_id)
        if deadline is None:
            return (yield)
        with deadline:
            return (yield)

    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """After a submission's last check, stop its server and remove its images."""
        current = _intake_id(item)
        if current is None or (nextitem is not None and _intake_id(nextitem) == current):
            return
        self.run.finish(current)
        item.stash[_finished_key] = True

    # --- results -------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        check_id = check_id_of(item)
        intake_id = _intake_id(item)
        if check_id is None or intake_id is None:
            return report
        if call.when == "teardown" and item.stash.get(_finished_key, False):
            report.user_properties.append((FINISHED_PROPERTY, intake_id))
        done = item.stash.setdefault(_recorded_key, False)
        if done or (call.when != "call" and call.excinfo is None):
            return report
        assert self.run.results is not None, "the grading session has not started"
        intake = self.run.intakes[intake_id]
        recorded = self.run.results.record(
            intake, check_id, outcome_of(call), call.duration, reason_of(call, check_id)
        )
        item.stash[_recorded_key] = True
        # The result travels with the report to the controlling process (itself, when serial).
        report.user_properties.append(recorded)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """On a terminal, the live board shows while the checks run."""
        board = self.config.stash.get(BOARD_KEY, None) if self.run.controls else None
        if board is not None:
            board.show(self.progress.board)
        try:
            return (yield)
        finally:
            if board is not None:
                board.hide()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.run.controls:
            self.progress.check_started(nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """In the controlling process: take results in and write the reports."""
        if not self.run.controls or self.run.results is None:
            return
        self.progress.seen(report)
        self.run.results.receive(report.user_properties, self.progress.finished)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        results = self.run.results
        if results is None:
            return
        terminalreporter.section(
            f"lab5-grader: profile {self.run.profile.name}, run {results.report.run_id}"
        )
        for line in summary_lines(results.report):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"reports: {results.report_dir}")


_recorded_key = pytest.StashKey[bool]()
_finished_key = pytest.StashKey[bool]()


def _intake_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("grading_intake") if callspec else None


@pytest.fixture
def grading_intake() -> str:
    """The id of the submission under grading; `--submissions` parametrizes it over all of them."""
    pytest.skip("grading is off: pass --submissions PATH")


@pytest.fixture
def grading(request: pytest.FixtureRequest, grading_intake: str) -> SubmissionGrading:
    """The submission under grading, with its stages and its result record."""
    run = request.config.stash[run_key]
    return SubmissionGrading(run, run.intakes[grading_intake])


def checks_dir() -> Path:
    """The folder of the check modules (`grader/checks`)."""
    return Path(__file__).with_name("checks")


# pytest's own exit codes that mean "grading ran": all checks passed, or some failed.
GRADING_RAN = {pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED}
