"""Served models: a server's process, and what the tpw_server fixture aims the sensor at."""
