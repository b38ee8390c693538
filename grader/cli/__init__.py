"""The `grader` command: grade, check, doctor, images, rubric, and the Ray backend."""
