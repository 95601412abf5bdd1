"""Admin accounts and the figures of the admin overview."""
