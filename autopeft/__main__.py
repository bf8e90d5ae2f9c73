"""`python -m autopeft` is the same as the `autopeft` command."""

from autopeft.cli import main

main()
