"""mso.spec."""
