"""Load: drive a served model at a stated load and take figures from its steady part."""
