"""unclip-nodes: DALL-E-2-style (unCLIP) generation as typed nodes.

This folder is both the Python package ``unclip_nodes`` and a ComfyUI custom-node pack; ComfyUI
imports it under a name derived from its path, so everything inside uses relative imports.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
__version__ = "0.1.0"
