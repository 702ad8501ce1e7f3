"""``python -m nexus.cli``: the same command as the ``nexus`` script."""

from __future__ import annotations

import sys

from nexus.cli.main import main

sys.exit(main())
