"""Machinery shared by the baseline algorithms."""
