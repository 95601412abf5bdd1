"""The Zendesk plugin."""
