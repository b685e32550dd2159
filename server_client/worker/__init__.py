"""Provides the worker: claims its owner's tasks from a server and runs codex for them."""
