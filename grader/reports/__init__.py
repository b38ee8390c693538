"""What a run leaves behind: stored results, JUnit, gradebook, HTML.

Knows nothing of Docker or pytest.
"""
