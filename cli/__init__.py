"""The `landscape` command line: one thin typer command per pipeline stage."""
from landscape.cli.app import app, main

__all__ = ["app", "main"]
