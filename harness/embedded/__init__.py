"""harness.embedded."""
