"""SQLAlchemy on the router's tenant transaction (optional: the router never imports this package)."""
