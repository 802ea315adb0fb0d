"""Operators' tools: tail topics, inspect dead letters, replay records."""
