"""Fixtures that start the ESL simulator (owned by the simulator's work)."""
