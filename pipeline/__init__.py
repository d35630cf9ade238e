"""Data: CIFAR-10 reading/downloading, batched on-device augmentation, training loaders."""
from .augment import batch_crop, batch_cutout, batch_flip_lr, normalize
from .cifar10 import CIFAR10, CLASSES, MEAN, STD, DataError, load_cifar10, resolve_data_dir
from .loaders import DataLoaderPipeline, DeviceLoader, LoaderSpec, eval_batches, loader_spec, make_loader

__all__ = ["batch_crop", "batch_cutout", "batch_flip_lr", "normalize", "CIFAR10", "CLASSES", "MEAN", "STD",
           "DataError", "load_cifar10", "resolve_data_dir", "DataLoaderPipeline", "DeviceLoader", "LoaderSpec",
           "eval_batches", "loader_spec", "make_loader"]
