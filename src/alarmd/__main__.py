"""``python -m alarmd``."""

from alarmd.cli import main

raise SystemExit(main())
