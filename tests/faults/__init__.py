"""Fault-injection suite (`pytest -m faults tests/faults`): see the module docstrings."""
