"""mso.cli."""
