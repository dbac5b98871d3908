"""harness.eval."""
