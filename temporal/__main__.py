"""``python -m temporal`` runs the command line."""

from temporal.cli import main

main()
