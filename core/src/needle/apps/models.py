"""The course's ``apps/models.py``: ``ResNet9`` and ``LanguageModel`` (same signatures)."""

from ..models import LanguageModel, ResNet9

__all__ = ["ResNet9", "LanguageModel"]
