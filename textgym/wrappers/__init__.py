"""Wrappers for TextGym envs."""

from textgym.wrappers.recorder import RecordGenerations, read_records
from textgym.wrappers.reference import KLPenalty, ReferencePerplexity

__all__ = ["KLPenalty", "RecordGenerations", "ReferencePerplexity", "read_records"]
