"""The command-line layer: the only place that imports typer/rich, prints, or exits."""
