"""The intake: validates every device report and dead-letters commands no service will ever read."""
