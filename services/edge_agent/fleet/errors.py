"""The fleet simulator's errors.

    SlmopsError
    └── FleetError
        └── FleetConfigError   InvalidRequest: a mix, fault plan or option the user gave is invalid (the
                               message says how)

(An injected crash, `device.DeviceCrashed`, is not an error: it stands for a process that died.)

Errors of the simulated devices themselves are the agent's (`services.edge_agent.errors`): a
simulated device fails a download, a verification or a load exactly like the real agent does, and
reports it on its status subject instead of raising.
"""

from __future__ import annotations

from shared import errors


class FleetError(errors.SlmopsError):
    """Base of the simulator's own errors."""


class FleetConfigError(FleetError, errors.InvalidRequest, ValueError):
    """Invalid simulator input; the message names the offending value and what would be accepted."""
