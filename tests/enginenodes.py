"""Cheap node types for the engine tests (registered on import; names start with Test).

They keep the engine tests independent of the real node pack.  When ENGINE_TEST_LOG names a
file, every node function appends its type there, so tests in other processes can see what ran.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from unclip_nodes.nodes import runtime
from unclip_nodes.nodes.declare import Input, Output, Param, node
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.types import socket_type

CAT = "test/engine"


@dataclasses.dataclass(frozen=True)
class TestModel:
    weight: torch.Tensor


socket_type("TEST_MODEL", "a model handle for tests (memory only)")


def log(name: str) -> None:
    path = os.environ.get("ENGINE_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


@node("TestNoise", category=CAT, description="Seeded random image.",
      params=[Param("seed", "INT", 0, min=0), Param("size", "INT", 4, min=1, max=64),
              Param("channels", "COMBO", "rgb", choices=("rgb", "gray"))],
      outputs=[Output("image", "IMAGE")])
def noise(seed, size, channels):
    log("TestNoise")
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, size, size, 3, generator=g)
    return img.mean(-1, keepdim=True).expand(-1, -1, -1, 3).clone() if channels == "gray" else img


@node("TestScale", category=CAT, description="Multiply an image by a factor.",
      inputs=[Input("image", "IMAGE")], params=[Param("factor", "FLOAT", 1.0, min=0.0, max=10.0)],
      outputs=[Output("image", "IMAGE")])
def scale(image, factor):
    log("TestScale")
    return image * factor


@node("TestAdd", category=CAT, description="Add two images (b optional).",
      inputs=[Input("a", "IMAGE"), Input("b", "IMAGE", optional=True)],
      outputs=[Output("image", "IMAGE"), Output("total", "FLOAT")])
def add(a, b):
    log("TestAdd")
    out = a if b is None else a + b
    return out, float(out.sum())


@node("TestLoader", category=CAT, description="Load a (fake) model.",
      params=[Param("name", "STRING", "tiny")], outputs=[Output("model", "TEST_MODEL")])
def loader(name):
    log("TestLoader")
    return TestModel(torch.full((1,), float(len(name))))


@node("TestApply", category=CAT, description="Use a model on an image, step by step.",
      inputs=[Input("model", "TEST_MODEL"), Input("image", "IMAGE")],
      params=[Param("steps", "INT", 2, min=0, max=1000),
              Param("delay", "FLOAT", 0.0, min=0.0, max=10.0)],
      outputs=[Output("image", "IMAGE")])
def apply(model, image, steps, delay):
    log("TestApply")
    out = image
    for _ in runtime.steps(steps, "applying"):
        time.sleep(delay)
        out = out * 0.5 + model.weight * 0.01
    return out


@node("TestSave", category=CAT, description="Write an image's sum to a text file.",
      inputs=[Input("image", "IMAGE")], params=[Param("prefix", "STRING", "img")],
      outputs=[Output("paths", "STRING")], output_node=True, cacheable=False,
      prefix="prefix", files="paths")
def save(image, prefix):
    log("TestSave")
    out = runtime.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prefix}.txt"
    path.write_text(f"{float(image.sum()):.6f}\n{runtime.metadata().get('unclip_inputs', '')}\n")
    return str(path.resolve())


def _size_check(params):
    if params["low"] > params["high"]:
        raise UserError(f"low ({params['low']}) must not exceed high ({params['high']})",
                        field="low")


def _file_fingerprint(params):
    try:
        st = Path(params["path"]).stat()
    except (OSError, ValueError):  # ValueError: a NUL in the path
        raise UserError(f"file not found: {params['path']}", field="path") from None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@node("TestRange", category=CAT, description="A constant with a cross-field check.",
      params=[Param("low", "INT", 0), Param("high", "INT", 1), Param("flag", "BOOLEAN", False)],
      outputs=[Output("value", "INT")], check=_size_check)
def range_(low, high, flag):
    log("TestRange")
    return high - low + int(flag)


@node("TestReadFile", category=CAT, description="Read a text file (fingerprinted).",
      params=[Param("path", "STRING")], outputs=[Output("text", "STRING")],
      fingerprint=_file_fingerprint)
def read_file(path):
    log("TestReadFile")
    return Path(path).read_text()


@node("TestMutate", category=CAT, description="Wrongly changes its input in place.",
      inputs=[Input("image", "IMAGE")], outputs=[Output("image", "IMAGE")])
def mutate(image):
    image.mul_(2)
    return image


@node("TestFail", category=CAT, description="Raises a UserError about its parameter at run time.",
      inputs=[Input("image", "IMAGE", optional=True)], params=[Param("text", "STRING", "")],
      outputs=[Output("image", "IMAGE")])
def fail(image, text):
    raise UserError(f"cannot use {text!r}", field="text")


@node("TestLength", category=CAT, description="Length of a text (e.g. of a saver's paths).",
      inputs=[Input("text", "STRING")], outputs=[Output("length", "INT")])
def length(text):
    log("TestLength")
    return len(text)
