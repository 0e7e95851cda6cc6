"""TB-CSS domain package, shipped to every Lambda: models, services and adapters."""
