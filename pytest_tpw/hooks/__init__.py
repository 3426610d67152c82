"""The pytest layer: hooks, fixtures, held reports, xdist; the one room that imports pytest."""
