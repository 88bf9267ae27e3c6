"""workers package of sparsearch."""

__all__: list[str] = []
