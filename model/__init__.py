"""CustomResNet (ResNet-9) and the transforms that prepare it for a device."""
from .resnet import CustomResNet, norm_act_factory

__all__ = ["CustomResNet", "norm_act_factory"]
