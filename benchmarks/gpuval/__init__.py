"""The parts of ``benchmarks/gpu_validation.py``, the GPU validation run, one job a module."""
