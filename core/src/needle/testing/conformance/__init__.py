"""The conformance suite: what every needle backend must pass.

Run it against any installed backend without this repository::

    python -m pytest --pyargs needle.testing.conformance --backend NAME
"""
