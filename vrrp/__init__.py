"""VRRP v2/v3 sans-IO core and asyncio adapter: filled by the VRRP issue."""
