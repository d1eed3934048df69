"""`python3 -m dropscope_lab …` (with tests/support on the Python path) is `tests/support/lab …`."""

import sys

from dropscope_lab.cli import main

sys.exit(main())
