"""The pytest-tpw command: compare, show, sensors, plot, export, report."""
