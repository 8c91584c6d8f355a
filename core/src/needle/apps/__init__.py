"""The course's ``apps`` package, with the course's signatures: course programs import it as
they imported their homework's ``apps`` (``from apps.simple_ml import *`` becomes
``from needle.apps.simple_ml import *``).

* :mod:`needle.apps.models`: ``ResNet9``, ``LanguageModel`` (hw4, hw4_extra).
* :mod:`needle.apps.mlp_resnet`: ``ResidualBlock``, ``MLPResNet``, ``epoch``,
  ``train_mnist`` (hw2): ``epoch`` returns ``(error rate, mean loss)``.
* :mod:`needle.apps.simple_ml`: ``parse_mnist``, ``softmax_loss``, ``nn_epoch`` (hw1) and
  ``epoch_general_cifar10``, ``train_cifar10``, ``evaluate_cifar10``,
  ``epoch_general_ptb``, ``train_ptb``, ``evaluate_ptb``, ``loss_err`` (hw4): the loops
  return ``(accuracy, mean loss)``.

:mod:`needle.models` keeps needle's own API (``epoch(dataloader, model, loss_fn, opt)``
returning accuracy, progress bars); these modules adapt it to the course's.
"""

from . import mlp_resnet, models, simple_ml

__all__ = ["mlp_resnet", "models", "simple_ml"]
