"""The fleet simulator's errors.

    FleetError
    └── FleetConfigError   a mix, fault plan or option the user gave is invalid (their fault; the message says how)

Errors of the simulated devices themselves are the agent's (`services.edge_agent.errors`): a
simulated device fails a download, a verification or a load exactly like the real agent does, and
reports it on its status subject instead of raising.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of the simulator's own errors."""


class FleetConfigError(FleetError, ValueError):
    """Invalid simulator input; the message names the offending value and what would be accepted."""
