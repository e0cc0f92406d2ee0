"""The SLMOps common library: message contracts, bus and storage plumbing, settings, tracing, CLI."""
