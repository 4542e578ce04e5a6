"""mso: a micro-service orchestrator.

Layers, in the direction data flows:
spec -> store -> controllers -> strategies/analysis -> engines/proxy -> api -> cli/web.
"""

__version__ = "0.1.0"
