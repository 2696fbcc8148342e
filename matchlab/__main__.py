"""`python -m matchlab ...` is the `matchlab` command."""
import sys

from .cli import main

sys.exit(main())
