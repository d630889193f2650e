"""``python -m warmdb``: the same as the ``warmdb`` command."""

from warmdb.cli import main

raise SystemExit(main())
