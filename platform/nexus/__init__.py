"""Nexus: a KServe-native LLM serving platform (layers and request paths: docs/architecture.md).

A regular package, not a namespace one: with a namespace package every ``nexus`` folder on
``sys.path`` (another checkout's editable install, say) would be merged into this one.
"""
