"""mso.engines.local."""
