"""Training entry point: `accelerate launch accelyolo/train.py [--recipe FILE] [--flag value ...]`.

Also `python -m accelyolo.train` and `accelyolo train`: the command itself is `accelyolo.commands.train`;
this file only makes it launchable by path.
"""

import sys

from accelyolo.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
