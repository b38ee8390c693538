"""The grading checks, one test per rubric check id. Run by `grader grade`."""
