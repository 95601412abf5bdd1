"""Recognise the same customer across tools and keep one timeline (identity → timeline)."""
