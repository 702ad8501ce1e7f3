"""Names on the wire that both servers, and what calls them, must agree on: defined once.

``FALLBACK_HEADER`` is set by the router on a Sequence step that runs because the step
before it failed (``router/sequence.py``); the router never forwards a client's own value
(``router/headers.py``), and the transformer that receives it charges the caller's tokens
but not a second request (``transformer/components.py``; issue 12, item 4). Names are in
the lower case ASGI servers give them; the router sends the canonical form Go's
``textproto`` would (``X-Nexus-Fallback``).

``MODELS_ROUTES`` are the OpenAI model listings both servers answer (``GET``).
``STEP_HEADER`` names the graph step whose answer the router relays.
``COMPLETIONS``, ``CHAT_COMPLETIONS`` and ``MODELS`` are the OpenAI routes under a server's
OpenAI base URL (``<prefix>/v1``) that the release's quality gate and its judge call on a
predictor (``release.evaluation``, ``release.judge``), and that the install rehearsal
checks the policies let through (``manifests.rehearsal.reachability``).
"""

from __future__ import annotations

from typing import Final

FALLBACK_HEADER: Final = b"x-nexus-fallback"
STEP_HEADER: Final = b"x-nexus-graph-step"
MODELS_ROUTES: Final = frozenset({"/v1/models", "/openai/v1/models"})
COMPLETIONS: Final = "/completions"
CHAT_COMPLETIONS: Final = "/chat/completions"
MODELS: Final = "/models"
