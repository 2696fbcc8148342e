"""`python -m matchlab ...` is the `matchlab` command."""
import sys

from .cli.app import console

sys.exit(console())
