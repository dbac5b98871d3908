"""`python -m harness [overrides...]`: run a sweep (see harness.cli)."""

import sys

from harness.cli import main

sys.exit(main())
