"""Summary templates."""
