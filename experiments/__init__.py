"""The runner: command-line entry points and the glue between conf/ and Keras."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: its git state, its conf/
CONF = PROJECT_ROOT / "conf"
