"""Health checkers (tcp, http, tls, dns, ...): filled by the health-checking issue."""
