"""mso.analysis."""
