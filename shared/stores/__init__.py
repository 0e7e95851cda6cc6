"""Single-table repositories of the modules beyond the foundation (one module each)."""
