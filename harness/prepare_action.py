"""`python -m harness action=prepare`: only the data preparation stage, its card printed.

Validates the sweep like `action=sweep`, checks the data (user files before the embedded
build), prepares the training data (or reuses it, by content hash) and prints the data card's
numbers; no model is trained or evaluated.
"""

from __future__ import annotations

from harness.data.card import CARD_TEXT, write_card
from harness.layout import data_dir
from harness.sweep import driver


def prepare(overrides: list[str]) -> int:
    """Run the preparation stage of the sweep these overrides describe; print the card."""
    sweep = driver.prepare(overrides)
    driver.check_inputs(sweep)      # ends with driver.prepare_sweep_data
    write_card(sweep.data_card, data_dir(sweep.dir))   # action=sweep writes it in driver.run
    print((data_dir(sweep.dir) / CARD_TEXT).read_text(), end="")
    return 0
