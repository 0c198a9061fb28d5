"""Concrete brokers: Kafka for real, an in-memory stub for tests."""
