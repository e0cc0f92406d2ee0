"""SLMOps services: one FastStream app each, over plain domain modules."""
