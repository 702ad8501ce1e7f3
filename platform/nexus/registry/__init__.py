"""The MLflow model registry as Nexus uses it: serving tags, aliases and release records.

``conventions`` holds the tag and alias names and turns a version's tags into a validated
``ModelDescription``; ``client`` is the only module that talks to MLflow, and translates
MLflow's errors into ``RegistryError`` at that edge. Importing this package does not
import MLflow (``nexus --help`` and the linter stay fast).
"""
