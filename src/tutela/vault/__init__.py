"""The vault: key hierarchy, envelope encryption, blob stores and media items."""
