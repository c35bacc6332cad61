"""resnet_tutorial: the package behind the resnet-tutorial book."""

from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
