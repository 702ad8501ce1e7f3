"""Manifests: rendering InferenceServices from model descriptions, and the manifest linter.

Public front: ``ModelDescription``, ``render_inference_service``/``render_yaml`` for the
release pipeline, ``lint_paths`` for ``nexus lint`` and the tests.
"""

from __future__ import annotations

from nexus.manifests.model import ModelDescription
from nexus.manifests.render import render_inference_service, render_yaml

__all__ = ["ModelDescription", "render_inference_service", "render_yaml"]
