"""mso.controllers."""
