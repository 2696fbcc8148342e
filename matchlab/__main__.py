"""`python -m matchlab ...` is the `matchlab` command."""
import sys

from .cli.app import main

sys.exit(main())
