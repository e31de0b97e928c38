"""The Kurable API: pydantic models that are also the CRD schemas."""
