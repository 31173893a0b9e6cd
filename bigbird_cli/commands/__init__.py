"""One module per subcommand; each exposes a Typer-annotated function named `command`."""
