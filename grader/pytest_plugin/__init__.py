"""The pytest plugin: options, hooks, xdist scheduling, the graded checks and the live board."""
