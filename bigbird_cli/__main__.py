"""`python -m bigbird_cli`: the same as the `bigbird` command."""

from .app import main

main()
