"""medstream: a Kafka stream processor for medication safety."""

__version__ = "0.1.0"
