"""Identity: passwords, second factors, sign-in with its throttles, sessions, employees."""
