"""Plotting: functions that take a study's DataFrame and return a matplotlib Figure."""
