"""`accelerate launch accelyolo/evolve.py [options]`: the script form of `accelyolo evolve`.

The search itself is `accelyolo.evolution` (the module is not named `evolve`, so that importing it never
hides the function `accelyolo.evolve`).
"""

import sys

from accelyolo.evolution import main

if __name__ == "__main__":
    sys.exit(main())
