"""harness.config."""
