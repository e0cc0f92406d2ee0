"""The rollout service's adapters: in memory for the fast tests (`memory.py`)."""
