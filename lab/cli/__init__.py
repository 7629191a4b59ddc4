"""The ``asyncps`` command line."""
