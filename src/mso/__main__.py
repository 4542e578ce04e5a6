"""`python -m mso` runs the CLI."""

from mso.cli.main import main

main()
