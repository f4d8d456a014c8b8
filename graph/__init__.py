"""The headless executor: YAML workflow -> validation -> DAG -> cached run, and the `unclip` CLI.

Python API::

    from unclip_nodes.graph import run_workflow
    result = run_workflow("workflows/text_to_image.yaml", {"seed": 3}, out_dir="out")
    result.outputs["image"], result.report
    run_workflow("workflows/presets/upscale.yaml", values={"image": tensor})  # a socket input

    from unclip_nodes.graph import run_sweep
    sweep = run_sweep("workflows/text_to_image.yaml", {"seed": range(8)}, out_dir="out")
"""
from .cache import Cache, CacheWarning, MemoryTier
from .api import run_workflow
from .run import RunInterrupted, RunResult, NodeRecord
from .sweep import run_sweep
from .validate import Resolved, load

__all__ = ["Cache", "CacheWarning", "MemoryTier", "NodeRecord", "Resolved", "RunInterrupted",
           "RunResult", "load", "run_sweep", "run_workflow"]
