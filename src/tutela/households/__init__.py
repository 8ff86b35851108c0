"""Households, customer accounts, profiles (adult or child, with guardians) and devices."""
