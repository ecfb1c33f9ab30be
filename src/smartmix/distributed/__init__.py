"""Executing a plan's application phase on a distributed engine (Ray Data)."""
