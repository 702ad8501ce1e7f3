"""Shared test support: free ports, managed processes, and the real servers tests start."""
