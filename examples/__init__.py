"""Runnable examples of tenantplane inside an application (each module says how to run it)."""
