from __future__ import annotations

from grader.cli.main import main

raise SystemExit(main())
