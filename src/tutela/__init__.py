"""Tutela: a privacy and security control plane for a smart-home service."""

__version__ = "0.1.0"
