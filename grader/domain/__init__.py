"""What a submission, a rubric, a check and a result are.

Knows nothing of Docker, pytest or reports.
"""
