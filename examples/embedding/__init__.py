"""A text-embedding service: an existing FastAPI app wrapped by ``mlmiddleware.instrument``."""
