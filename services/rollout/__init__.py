"""The rollout service: staged, gated, self-reverting rollouts over the device inventory (issue 10, in progress)."""
