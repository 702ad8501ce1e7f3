"""What the release pipeline's steps do; the KFP components are thin calls into here.

``steps`` is the graph (resolve → canary → promote | roll back, and the exit handler);
``pipeline`` builds it as the KFP pipeline, ``run`` runs it through ``kfp.local`` or
inline, ``submit`` sends it to a KFP cluster. What the steps call: ``resolve`` (registry →
``ReleasePlan``), ``canary`` (each traffic step: commit, wait, judge, the alert watch),
``render`` (plan → InferenceService YAML), ``gitops`` (commit and push, race-safe),
``wait`` (Argo CD and InferenceService status until the traffic split is the one asked
for), ``analyze`` (PromQL canary vs stable), ``rollout`` (promote, roll back, the exit
handler's revert), ``record`` (registry tags and aliases), ``tracking``/``evidence``
(the MLflow run, report and chart). Their layers are an import-linter contract.

Every step takes and returns plain strings and numbers (JSON where structured), so
the same functions serve KFP components, the CLI and tests. ``release`` never imports
``nexus.transformer`` (import-linter contract in ``pyproject.toml``).
"""
