"""mso.engines."""
