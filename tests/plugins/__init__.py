"""One folder of tests per plugin."""
