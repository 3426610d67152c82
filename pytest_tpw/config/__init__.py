"""Settings: the table of flags, ini keys and marker arguments, and the settings built from it."""
