"""``python -m torchwheel`` → :func:`torchwheel.cli.main`."""

import sys

from .cli import main

sys.exit(main())
