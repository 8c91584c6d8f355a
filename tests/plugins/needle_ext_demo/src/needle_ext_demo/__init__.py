"""A demo needle extension plugin (see ``plugin.py``)."""
