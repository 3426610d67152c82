"""``python -m pytest_tpw.cli``: the ``pytest-tpw`` command."""

from pytest_tpw.cli.main import main

raise SystemExit(main())
