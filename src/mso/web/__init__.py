"""mso.web."""
