"""``python -m city``: the same as the `timebank` command."""

from city.cli import main

main()
