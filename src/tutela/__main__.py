"""`python -m tutela` runs the command line."""

from tutela.cli import main

main()
