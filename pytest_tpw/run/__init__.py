"""One measuring session: sensor, baselines, judge and meters, its role, its outputs."""
