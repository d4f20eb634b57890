"""The admin REST API (admin.py), mounted at /api/v1, and its OpenAPI document (openapi.py)."""
