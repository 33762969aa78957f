"""shop: the backend of an online store, as a REST API."""
