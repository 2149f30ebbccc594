"""``python -m prefill_guard``: the same as the ``prefill-guard`` command."""

import sys

from .cli import main

sys.exit(main())
