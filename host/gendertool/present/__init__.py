"""Presentation layer: consoles, tables, plots and progress for the commands."""
