"""Adapters that put clearance between an agent framework and the tools its model calls."""
