"""`python -m bioxlstm` runs the command line."""

import sys

from bioxlstm.cli import main

sys.exit(main())
