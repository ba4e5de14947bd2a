"""`accelerate launch accelyolo/evolve.py [options]`: the script form of `accelyolo evolve`.

The search itself is `accelyolo.commands.evolve`; this file only makes it launchable by path.
"""

import sys

from accelyolo.commands.evolve import main

if __name__ == "__main__":
    sys.exit(main())
