"""The node pack.  Importing it registers every node type.

Each stage module declares its nodes with ``declare.node``; the list below is the whole pack.
"""
from . import types  # noqa: F401  -- socket types first: declarations check against them
from .declare import REGISTRY, comfy_mappings
from . import image  # noqa: F401
from . import mask  # noqa: F401
from . import loaders  # noqa: F401
from . import clip  # noqa: F401
from . import prior  # noqa: F401
from . import decoder  # noqa: F401
from . import upsample  # noqa: F401
from . import inpaint  # noqa: F401
from . import interpolate  # noqa: F401
from . import clipvision  # noqa: F401
from . import invert  # noqa: F401
from . import pca  # noqa: F401
from . import score  # noqa: F401
from . import comfy_core  # noqa: F401  -- ComfyUI's own nodes, as workflows may name them

NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = comfy_mappings(REGISTRY.values())
