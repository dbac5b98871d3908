"""`python -m harness.trial TRIAL_DIR`: run one trial in this process (see harness.trial.run)."""

import sys

from harness.trial.run import main

sys.exit(main())
