"""ipvsmgr: a declarative, highly available Linux IPVS load balancer manager."""

__version__ = "0.1.0"
