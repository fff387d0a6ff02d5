"""Built-in evaluation: the shapes checker, distribution distances for 2-D data."""
