"""``python -m multiagent``."""

from multiagent.cli import main

if __name__ == "__main__":
    main()
