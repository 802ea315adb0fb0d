"""medstream's own keyed state: local stores, their changelog, and the checkpoint order."""
