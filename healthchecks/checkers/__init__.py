"""One module per check type; each defines a frozen options dataclass with
`async def check(self, target: Target, timeout: float) -> Result`."""


class MissingPackage(ImportError):
    """A Python package a check type needs is not installed. The message names the
    Debian package; `ipvsmgr check` reports it at the check's line, as it is."""
