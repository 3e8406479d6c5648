"""An SSH and database session-recording bastion."""

__version__ = "0.1.0"
