import sys

from dropscope.cli import main

sys.exit(main())
