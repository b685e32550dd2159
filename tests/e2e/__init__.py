"""Provides the e2e tests."""
