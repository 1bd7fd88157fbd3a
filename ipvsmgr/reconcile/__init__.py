"""Desired state -> pure diff against the kernel -> ordered operations -> apply."""
