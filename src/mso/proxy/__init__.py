"""mso.proxy."""
