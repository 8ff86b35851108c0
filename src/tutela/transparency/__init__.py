"""Access transparency: what customers are told of employees' access to their data (R2, R3, R9)."""
