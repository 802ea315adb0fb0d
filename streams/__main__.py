"""Lets ``python -m streams`` run the medstream command line."""

from streams.cli import main

if __name__ == "__main__":
    main()
