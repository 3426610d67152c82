"""What users read: the terminal table, JSON, Markdown, exports, plots, the live line."""
