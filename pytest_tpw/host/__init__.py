"""This machine: process trees, CPU time, hardware key, software stack, locks, ranks, pinning."""
