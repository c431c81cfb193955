"""``python -m pilothouse`` runs the CLI."""

from .cli import main

main()
