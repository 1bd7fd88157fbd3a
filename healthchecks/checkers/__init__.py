"""One module per check type; each defines a frozen options dataclass with
`async def check(self, target: Target, timeout: float) -> Result`."""
