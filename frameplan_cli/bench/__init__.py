"""Benchmarks behind ``frameplan bench <name>`` (frameplan_cli/verbs/bench.py); results go to docs/BENCHMARKS.md."""
