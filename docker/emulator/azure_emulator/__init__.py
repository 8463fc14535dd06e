"""A local, development-only emulator of the Azure endpoints the secret sidecar talks to.

Managed identity (IMDS and the Azure ML identity endpoint), Key Vault Get Secret and
Azure ML workspace-connection List Secrets, with fake values from a YAML fixture.
Never use it, or anything it issues, in production.
"""
