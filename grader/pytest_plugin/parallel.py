"""Grading several submissions at once with pytest-xdist, one whole submission per work unit."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


class SubmissionScheduling(LoadScopeScheduling):
    """xdist's scope scheduling, with the submission as the scope.

    A submission's checks share its images, training run and server, so they must run on one
    worker and in order; different submissions run on different workers at the same time.
    """

    def _split_scope(self, nodeid: str) -> str:
        return submission_of_nodeid(nodeid) or nodeid


def submission_of_nodeid(nodeid: str) -> str | None:
    """The submission id in a check's node id: `.../test_train.py::test_build[<id>]`."""
    test = nodeid.split("::", 1)[-1]
    return test[test.index("[") + 1 : -1] if "[" in test else None
