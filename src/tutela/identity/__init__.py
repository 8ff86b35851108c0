"""Identity: passwords, sessions and (later) factors and throttles."""
