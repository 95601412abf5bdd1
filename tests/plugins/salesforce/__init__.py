"""The Salesforce plugin."""
