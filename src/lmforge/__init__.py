"""lmforge: plan, prepare, train, evaluate, inspect, convert and serve open LLMs."""

__version__ = "0.1.0"
