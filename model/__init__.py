"""CustomResNet (ResNet-9) (resnet.py), how it is built, compiled and autocast for a device (build.py), and the
recipes' initialisations of its convolutions (initialise.py)."""
from .resnet import CustomResNet, norm_act_factory

__all__ = ["CustomResNet", "norm_act_factory"]
