"""Wrappers for TextGym envs."""

from textgym.wrappers.prompt_pool import PromptPool
from textgym.wrappers.recorder import RecordGenerations, read_records
from textgym.wrappers.reference import KLPenalty, ReferencePerplexity

__all__ = ["KLPenalty", "PromptPool", "RecordGenerations", "ReferencePerplexity", "read_records"]
