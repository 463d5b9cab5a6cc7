"""The resource planner: will it fit, on how many GPUs, laid out how, and how long.

Pure Python: importing this package must not import torch or transformers.
"""
