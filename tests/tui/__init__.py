"""Provides the tui tests."""
