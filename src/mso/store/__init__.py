"""mso.store."""
