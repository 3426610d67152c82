"""The pytest-tpw command: compare, show, plot, export, report."""
