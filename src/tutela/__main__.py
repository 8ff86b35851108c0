"""`python -m tutela` runs the command line."""

from tutela.cli import main

# Guarded: `tutela serve --workers N` spawns worker processes, which import this module
# again (as `__mp_main__`) and must not run the command line a second time.
if __name__ == "__main__":
    main()
