"""harness.sweep."""
