"""BGP announcements of the VIPs through ExaBGP."""
