"""unclip-nodes: DALL-E-2-style (unCLIP) generation as typed nodes.

This folder is both the Python package ``unclip_nodes`` and a ComfyUI custom-node pack; ComfyUI
imports it under a name derived from its path, so everything inside uses relative imports.

ComfyUI reads ``NODE_CLASS_MAPPINGS``: our node types, then one 'unCLIP preset:<name>' node per
preset (graph/comfy_presets.py).  The presets are read when the mappings are first asked for,
not on every import of the package (the ``unclip`` command never needs them).  Nor is anything
else imported here: the ``unclip`` command (``__main__.py``) must be able to catch a Ctrl-C
while torch loads.
"""
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
__version__ = "0.1.0"
WEB_DIRECTORY = "./web"  # ComfyUI serves it to its front end: our sockets' colours


def __getattr__(name: str):
    if name not in __all__[:2]:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .graph.comfy_presets import preset_mappings
    from .nodes.folders import comfy_folder_paths
    if comfy_folder_paths() is not None:  # inside ComfyUI: models/unclip registered and made
        from .graph.comfy_prompt import register
        register()  # our checks of a whole prompt, before ComfyUI starts it
    from .nodes import NODE_CLASS_MAPPINGS as node_classes
    from .nodes import NODE_DISPLAY_NAME_MAPPINGS as node_names
    classes, names = preset_mappings()
    mappings = {"NODE_CLASS_MAPPINGS": {**node_classes, **classes},
                "NODE_DISPLAY_NAME_MAPPINGS": {**node_names, **names}}
    globals().update(mappings)  # built once
    return mappings[name]
