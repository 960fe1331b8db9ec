"""Networks: ``resnet`` (the ResNet-15 encoder), ``heads`` (projector, classifier, regressor), ``vgg``.

Model files hold only ``nn.Module``s and their config dataclasses; they never import training code.
"""

from jetlib.models.resnet import ResNet, ResNetConfig, resnet15

__all__ = ["ResNet", "ResNetConfig", "resnet15"]
