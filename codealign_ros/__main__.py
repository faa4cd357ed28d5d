"""`python -m codealign_ros` runs the `codealign` command line."""
import sys

from codealign_ros.cli import main

sys.exit(main())
