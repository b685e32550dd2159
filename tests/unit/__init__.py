"""Provides the unit tests."""
