"""``python -m aelab`` (and ``torchrun -m aelab``): the command line."""

from aelab.cli import main

if __name__ == "__main__":
    main()
