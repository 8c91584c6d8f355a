"""Testing support for needle and its backends: the op table and the conformance suite.

:mod:`needle.testing.pytest_plugin` gives pytest the ``device`` fixture and
``--backend``; :mod:`needle.testing.conformance` holds the tests every backend
must pass; :mod:`needle.testing.optable` lists every op once.
"""
