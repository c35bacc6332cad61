"""resnet_tutorial: the package behind the resnet-tutorial book."""

import os as _os

from .models import create_model, list_models

if _os.environ.get("RESNET_TUTORIAL_LANGUAGE", "en") not in ("", "en"):
    # A translated edition of the book (`make book-zh`): matplotlib gets its CJK font before any figure
    # exists, because a figure's title and axis labels take their font when the axes are created.
    from .plots import use_language_font

    use_language_font()

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
