"""The lab's steps done for real on one submission (build, train, serve, predict).

Plain functions and classes, usable without pytest.
"""
