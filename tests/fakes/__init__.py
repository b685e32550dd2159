"""Provides the fakes the tests run instead of real parts: a fake codex, a mock model server,
the offline codex home, a network proxy."""
