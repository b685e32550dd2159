"""Provides the server tests."""
