"""Manifests: rendering InferenceServices from model descriptions, and the manifest linter.

Modules: ``model`` (the description), ``render`` (description -> InferenceService through
the ``kserve`` SDK), ``pools`` (``platform/pools.yaml``), ``lint`` (``nexus lint``) with
``schema``, ``rules/*`` and ``findings``. Nothing is imported here: the ``kserve`` SDK is
slow to import and the linter does not need it.
"""
