"""The local platform: the same components as in a cluster, as processes on one machine."""
