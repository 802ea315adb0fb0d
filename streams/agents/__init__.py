"""Faust agents: thin loops that move events between topics, tables and the domain logic."""
