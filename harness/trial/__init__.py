"""harness.trial."""
