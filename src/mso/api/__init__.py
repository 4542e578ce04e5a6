"""mso.api."""
