"""modelswap: immutable model versions, a pointer for what is live, rollback in seconds."""

__version__ = "0.1.0"
