"""`python -m harness.cascade top-k|reeval SWEEP_DIR`: the cost cascade's command line
(see harness.sweep.cascade)."""

import sys

from harness.sweep.cascade import main

if __name__ == "__main__":
    sys.exit(main())
