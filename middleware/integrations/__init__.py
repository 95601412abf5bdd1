"""What an integration is and how one is installed: plugins, settings, upstream health."""
