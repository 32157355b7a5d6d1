"""Persistence: the inventory, faults and the notification outbox (SQLAlchemy)."""
