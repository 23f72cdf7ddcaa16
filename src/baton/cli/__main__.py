"""`python -m baton.cli`: the same as the `baton` command."""

from .base import main

main()
