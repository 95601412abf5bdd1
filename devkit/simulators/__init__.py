"""Simulated Zendesk, Salesforce and Twilio that speak the vendors' real formats."""
