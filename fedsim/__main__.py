"""``python -m fedsim``: the fedsim command line."""
import sys

from fedsim.cli import main

sys.exit(main())
