"""Files: the baseline store, results documents, atomic writes."""
