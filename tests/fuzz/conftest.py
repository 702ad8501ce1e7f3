"""The fuzz tier: Hypothesis, bounded so the whole directory runs in CI in well under a minute.

``NEXUS_FUZZ_EXAMPLES`` raises the number of examples per property for a longer local
run (for example 5000); the database stays off so that CI runs are reproducible from the
printed seed alone.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "nexus-fuzz",
    max_examples=int(os.environ.get("NEXUS_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("nexus-fuzz")
