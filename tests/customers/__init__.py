"""Identity and redaction."""
