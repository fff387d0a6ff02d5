"""What the user sees: plots and sample grids (PIL only)."""
