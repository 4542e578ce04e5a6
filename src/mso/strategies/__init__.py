"""mso.strategies."""
