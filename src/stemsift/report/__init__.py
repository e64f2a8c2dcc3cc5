"""Static reports (the listening report)."""
