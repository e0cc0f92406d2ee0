"""Implementations of the agent's ports (`services/edge_agent/ports.py`) other than the NATS one."""
