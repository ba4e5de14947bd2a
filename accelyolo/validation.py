"""`accelerate launch accelyolo/validation.py --weights FILE --data DATA_YAML`: the script form of `accelyolo val`.

The command itself is `accelyolo.commands.validate`; this file only makes it launchable by path.
"""

import sys

from accelyolo.commands.validate import main

if __name__ == "__main__":
    sys.exit(main())
