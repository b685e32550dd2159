"""Provides helpers shared by test folders: databases, worker processes, the TUI."""
