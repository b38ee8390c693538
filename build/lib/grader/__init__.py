"""lab5-grader: grades the lab "Containers for cloud training and inference" in real containers."""

from __future__ import annotations

__version__ = "0.1.0"
