"""What the release pipeline's steps do; the KFP components are thin calls into here.

One module per step: ``resolve`` (registry → ``ReleasePlan``), ``render`` (plan →
InferenceService YAML), ``gitops`` (commit and push, race-safe), ``wait`` (Argo CD and
InferenceService status until the traffic split is the one asked for), ``analyze``
(PromQL canary vs stable), ``rollout`` (the first rollout, promote, roll back) and
``record`` (registry tags and aliases). ``pipeline`` wires them into the KFP pipeline
and ``run`` runs it through ``kfp.local`` (or inline) or submits it to a KFP cluster.

Every step takes and returns plain strings and numbers (JSON where structured), so
the same functions serve KFP components, the CLI and tests. ``release`` never imports
``nexus.transformer`` (import-linter contract in ``pyproject.toml``).
"""
