"""The local runtime: the synthesized stack on moto, with the real handlers
running in-process workers, no Docker and no AWS account (DESIGN.md §9)."""
