"""``python -m watchdog`` is the same program as the ``watchdog`` console script."""

from watchdog.cli import main

raise SystemExit(main())
