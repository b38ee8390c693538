"""The Docker engine: images, stand-ins, containers, networks, limits.

Knows nothing of pytest or the rubric.
"""
