"""`python -m accelyolo ...` is the `accelyolo` console script."""

import sys

from accelyolo.commands.cli import main

sys.exit(main())
