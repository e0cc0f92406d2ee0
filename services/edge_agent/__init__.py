"""The edge agent: the device side of the protocol (download, verify, A/B switch, inference, telemetry)."""
