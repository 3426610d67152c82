"""Taking measurements: the fixture's meters, windows on a sensor, the samples they give."""
