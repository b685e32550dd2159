"""Provides the worker tests."""
