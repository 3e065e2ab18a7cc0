"""Exports of the inference path to other runtimes."""
