"""The library's version: a leaf every layer may import (it imports nothing)."""
__version__ = "0.1.0"
