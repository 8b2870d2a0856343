"""`python -m farm` runs the CLI."""

from farm.cli import main

main()
