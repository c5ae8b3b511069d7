"""shopstream."""
