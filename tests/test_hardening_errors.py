"""Every user mistake ends in a short message naming the file (and line, node, field where
there are such), exit code 2 and no traceback: JSON and YAML that Python's parsers choke on,
PNG text chunks over Pillow's limits, files that are not images, checkpoint configs of the wrong
types, and Ctrl-C or SIGTERM at any time."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, PngImagePlugin

from conftest import cli_env, write
from unclip_nodes.graph import workflow
from unclip_nodes.graph.cli import main
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes.core.checkpoint import POCKET
from unclip_nodes.nodes.errors import UserError
from kandinsky_util import tiny_kandinsky  # noqa: F401  (fixture)


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(args: list, capsys) -> str:
    """The CLI's stderr for a mistake: exit code 2, no traceback."""
    code, out, err = run(args, capsys)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    return err


def picture(path: Path, size=(8, 6)) -> Path:
    arr = (np.arange(size[0] * size[1] * 3) % 251).astype(np.uint8).reshape(size[1], size[0], 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def copy_wf(folder: Path, image: Path, extra: str = "") -> Path:
    """LoadImage -> SaveImage."""
    return write(folder / "wf.yaml", f"""
        description: "copies a picture{extra}"
        nodes:
          load: {{type: LoadImage, params: {{image: "{image}"}}}}
          save: {{type: SaveImage, links: {{images: load.image}}, params: {{filename_prefix: shot}}}}
        """)


def api_doc(path_value: str) -> str:
    """An API-format prompt (LoadImage -> SaveImage) with ``path_value`` as written JSON."""
    return ('{"1": {"class_type": "unCLIP LoadImage", "inputs": {"path": ' + path_value + '}},'
            ' "2": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["1", 0]}}}')


def png_with(path: Path, chunks: dict[str, str], zip: bool = False) -> Path:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v, zip=zip)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, pnginfo=info)
    return path


DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 100_000


# --- 1. JSON and YAML that Python's parsers cannot take ------------------------------------------

@pytest.mark.parametrize("command", ["validate", "run"])
def test_json_workflow_nested_too_deep_is_a_user_error(command, tmp_path, capsys):
    doc = tmp_path / "deep.json"
    doc.write_text("\n" + DEEP)
    err = user_error([command, doc, "--out", tmp_path / "o"] if command == "run"
                     else [command, doc], capsys)
    assert err.startswith(f"{doc}:2:") and "nested too deeply: 100,000 levels" in err
    if command == "run":  # a sweep reads the file as YAML (its JSON is ours): libyaml says so
        err = user_error([command, doc, "--sweep", "seed=0,1"], capsys)
        assert err.startswith(f"{doc}:2:") and "nesting depth" in err


@pytest.mark.parametrize("number,expected", [
    (HUGE_INT, "a number with 100,000 digits is too long (at most 4,300)"),
    ("1e999999", "the number 1e999999 is too large"),
    ("NaN", "NaN is not a JSON number"),
])
def test_json_workflow_with_numbers_python_will_not_take_is_a_user_error(number, expected,
                                                                        tmp_path, capsys):
    doc = tmp_path / "nums.json"
    doc.write_text(api_doc(number))
    err = user_error(["validate", doc], capsys)
    assert f"{doc}:1:61: JSON: {expected}" in err


def test_json_in_png_text_chunks_is_checked_the_same_way(tmp_path, capsys):
    deep = png_with(tmp_path / "deep.png", {"prompt": DEEP})
    err = user_error(["validate", deep], capsys)
    assert f"{deep}[prompt]:1:" in err and "nested too deeply" in err
    big = png_with(tmp_path / "big.png", {"prompt": api_doc(HUGE_INT)})
    err = user_error(["run", big, "--out", tmp_path / "o"], capsys)
    assert f"{big}[prompt]:1:61:" in err and "100,000 digits" in err
    ours = png_with(tmp_path / "ours.png", {
        "unclip_workflow": "nodes:\n  a: {type: LoadImage, params: {image: x.png}}\n",
        "unclip_inputs": '{"seed": ' + HUGE_INT + "}"})
    err = user_error(["validate", ours], capsys)
    assert f"{ours}[unclip_inputs]:1:10: the unclip_inputs chunk: JSON: a number with " \
           "100,000 digits" in err


def test_yaml_nested_too_deep_is_a_user_error_with_either_parser(tmp_path, monkeypatch, capsys):
    path = write(tmp_path / "deep.yaml", "nodes:\n  a: {type: LoadImage, params: {image: "
                 + "[" * 5000 + "]" * 5000 + "}}\n")
    err = user_error(["validate", path], capsys)  # libyaml: a depth limit of its own
    assert f"{path}:2:" in err and "nested" in err
    monkeypatch.setattr(workflow, "_Loader", yaml.SafeLoader)  # the pure-Python parser recurses
    with pytest.raises(UserError) as e:
        load(path)
    assert e.value.file == str(path) and "nested too deeply" in e.value.message


def test_yaml_integer_too_long_to_print_is_a_user_error(tmp_path, capsys):
    path = write(tmp_path / "hex.yaml", f"""
        inputs:
          seed: {{type: INT, default: 0x{"f" * 20_000}}}
        nodes:
          load: {{type: LoadImage, params: {{image: "{picture(tmp_path / 'pic.png')}"}}}}
          save: {{type: SaveImage, links: {{images: load.image}}}}
        """)
    err = user_error(["validate", path], capsys)  # it used to fail printing the input's value
    assert f"{path}:2:" in err and "a number with more than 4,300 digits is too long" in err


# --- 2. PNG text chunks over Pillow's limits ---------------------------------------------------

PROMPT = " ".join(["a red circle on a white background"] * 60_000)  # 2 MB


def big_png(tmp_path: Path, capsys) -> Path:
    """A PNG of ours whose workflow holds a 2 MB description; the YAML file is gone since."""
    wf = copy_wf(tmp_path / "proj", picture(tmp_path / "proj" / "pic.png"), PROMPT)
    code, _, err = run(["run", wf, "--out", tmp_path / "a", "--no-cache"], capsys)
    assert code == 0, err
    wf.unlink()
    return tmp_path / "a" / "shot_00001_.png"


def test_our_png_with_a_2mb_workflow_runs_again_also_when_its_chunks_are_compressed(
        tmp_path, capsys):
    png = big_png(tmp_path, capsys)
    code, out, err = run(["validate", png], capsys)
    assert code == 0, err
    with Image.open(png) as img:
        text = dict(img.text)
    assert len(text["unclip_workflow"]) > 2_000_000
    # an optimizer (or another tool) may store the same chunks compressed: zTXt, iTXt
    squeezed = png_with(tmp_path / "squeezed.png", text, zip=True)
    with pytest.raises(ValueError, match="Decompressed"):  # what Pillow itself says
        Image.open(squeezed).load()
    code, out, err = run(["run", squeezed, "--out", tmp_path / "b", "--no-cache",
                          "--trust-inputs"], capsys)  # ours: the picture it names may be read
    assert code == 0, err
    assert (tmp_path / "b" / "shot_00001_.png").is_file()


def test_png_chunk_over_the_file_limit_names_the_limit_and_how_to_raise_it(tmp_path, capsys,
                                                                            monkeypatch):
    png = big_png(tmp_path, capsys)
    monkeypatch.setenv("UNCLIP_MAX_FILE_BYTES", "1000000")
    err = user_error(["validate", png], capsys)
    assert err.startswith(f"{png}: its text chunk 'unclip_workflow' holds ")
    assert "more than the limit of 1,000,000; to allow it, set UNCLIP_MAX_FILE_BYTES=" in err
    assert "unclip-png-" not in err  # not the temporary file it used to be copied to
    with Image.open(png) as img:
        text = dict(img.text)
    squeezed = png_with(tmp_path / "squeezed.png", text, zip=True)
    err = user_error(["validate", squeezed], capsys)
    assert f"{squeezed}: its text chunk 'unclip_workflow' holds " in err
    assert "UNCLIP_MAX_FILE_BYTES=" in err


def test_load_image_reads_a_png_with_big_compressed_metadata(tmp_path, capsys, monkeypatch):
    png = png_with(tmp_path / "meta.png", {"notes": PROMPT}, zip=True)  # 2 MB unpacked
    wf = copy_wf(tmp_path, png)
    code, _, err = run(["run", wf, "--out", tmp_path / "o", "--no-cache"], capsys)
    assert code == 0, err
    monkeypatch.setenv("UNCLIP_MAX_FILE_BYTES", "1000")
    err = user_error(["validate", wf], capsys)
    assert f"node 'load', field 'image': cannot read image {png}: its PNG text chunks " \
           "(metadata) are larger than the limit" in err and "UNCLIP_MAX_FILE_BYTES" in err
    assert PngImagePlugin.MAX_TEXT_CHUNK == 1 << 20  # Pillow's own limits are restored


def test_damaged_png_chunks_are_user_errors(tmp_path, capsys):
    good = png_with(tmp_path / "good.png", {"prompt": api_doc('"x.png"')})
    data = bytearray(good.read_bytes())
    at = data.index(b"tEXt") + 20
    data[at] ^= 0xFF  # flip a byte of the text: its checksum is now wrong
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    err = user_error(["validate", bad], capsys)
    assert f"cannot read {bad} as a PNG image: text chunk 'prompt' is damaged" in err
    short = tmp_path / "short.png"
    short.write_bytes(good.read_bytes()[:40])
    err = user_error(["validate", short], capsys)
    assert f"cannot read {short} as a PNG image: the file is truncated" in err
    bomb = tmp_path / "bomb.png"
    payload = b"prompt\0\0" + zlib.compress(b" " * (64 << 20), 9)
    chunk = len(payload).to_bytes(4, "big") + b"zTXt" + payload
    chunk += zlib.crc32(b"zTXt" + payload).to_bytes(4, "big")
    raw = good.read_bytes()
    bomb.write_bytes(raw[:33] + chunk + raw[33:])
    err = user_error(["validate", bomb], capsys)
    assert f"{bomb}: its text chunk 'prompt' holds 67,108,864 bytes, more than the limit of " \
           "16,777,216; to allow it, set UNCLIP_MAX_FILE_BYTES=67108864" in err


# --- 3. files that are not images -------------------------------------------------------------

def test_a_text_file_named_png_is_not_an_image_and_the_message_says_which_file(tmp_path,
                                                                                capsys):
    fake = tmp_path / "x.png"
    fake.write_text("hello, I am a text file\n")
    wf = copy_wf(tmp_path, fake)
    for args in (["validate", wf], ["run", wf, "--out", tmp_path / "o"],
                 ["validate", "image_variations", "--set", f"image={fake}"]):
        err = user_error(args, capsys)
        assert f"cannot read image {fake}: not an image Pillow can read (PNG, JPEG, WebP, " \
               "...)" in err, err
        assert "BytesIO" not in err and "0x" not in err
    err = user_error(["validate", fake], capsys)  # as a workflow to run
    assert f"cannot read {fake}: not a PNG image" in err


def test_truncated_images_are_user_errors_naming_the_file(tmp_path, capsys):
    pic = picture(tmp_path / "whole.png", (64, 64))
    half = tmp_path / "half.png"
    half.write_bytes(pic.read_bytes()[:len(pic.read_bytes()) // 2])
    err = user_error(["validate", copy_wf(tmp_path, half)], capsys)  # found before running
    assert f"node 'load', field 'image': cannot read image {half}: the file is truncated or " \
           "damaged" in err
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "w.jpg")
    jpeg = tmp_path / "half.jpg"
    jpeg.write_bytes((tmp_path / "w.jpg").read_bytes()[:1500])
    err = user_error(["run", copy_wf(tmp_path, jpeg), "--out", tmp_path / "o", "--no-cache"],
                     capsys)
    assert f"cannot read image {jpeg}: the file is truncated or damaged" in err
    assert "BytesIO" not in err


# --- 4. checkpoint configs of the wrong types -----------------------------------------------------

def pocket_copy(tmp_path: Path, part: str, **changes) -> Path:
    root = tmp_path / "ck"
    shutil.copytree(POCKET, root)
    cfg_file = root / part / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(changes)
    cfg_file.write_text(json.dumps(cfg))
    return root


@pytest.mark.parametrize("part,changes,expected", [
    ("decoder", {"in_channels": "four"}, "'in_channels' must be a whole number, got \"four\""),
    ("decoder", {"block_out_channels": 5}, "'block_out_channels' must be a list of whole "
                                           "numbers, got 5"),
    ("text_encoder", {"hidden_size": [64]}, "'hidden_size' must be a whole number, got [64]"),
])
def test_config_values_of_the_wrong_type_are_found_when_validating(part, changes, expected,
                                                                    tmp_path, capsys):
    root = pocket_copy(tmp_path, part, **changes)
    err = user_error(["validate", "text_to_image", "--set", f"model={root}"], capsys)
    assert f"node 'model', field 'path': {root / part / 'config.json'}: {expected}" in err


def test_a_config_that_does_not_build_its_model_names_the_file_and_the_class(tmp_path,
                                                                             capsys):
    root = pocket_copy(tmp_path, "prior", num_attention_heads=[2])
    err = user_error(["run", "text_to_image", "--set", f"model={root}", "--set", "steps=2",
                      "--set", "upsample_steps=2", "--no-cache", "--out", tmp_path / "o"],
                     capsys)
    assert f"node 'prior': {root / 'prior' / 'config.json'}: the config does not build a " \
           "PriorTransformer (TypeError: " in err


def test_config_that_is_not_json_or_not_an_object(tmp_path, capsys):
    root = pocket_copy(tmp_path, "decoder")
    cfg = root / "decoder" / "config.json"
    for text, expected in [("not json", f"cannot read {cfg}: JSON syntax error: Expecting "
                                        "value (line 1, column 1)"),
                           ("[1, 2]", f"{cfg} does not hold a JSON object (it holds a list)"),
                           (DEEP, f"cannot read {cfg}: JSON nested too deeply")]:
        cfg.write_text(text)
        err = user_error(["validate", "text_to_image", "--set", f"model={root}"], capsys)
        assert expected in err, err


def test_kandinsky_configs_too(tiny_kandinsky, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "k22"
    shutil.copytree(tiny_kandinsky, root)
    unet = root / "decoder" / "unet" / "config.json"
    good = unet.read_text()
    args = ["text_to_image", "--set", f"prior={root / 'prior'}",
            "--set", f"decoder={root / 'decoder'}"]
    wf = str(Path(workflow.__file__).parent.parent / "workflows" / "kandinsky" /
             "text_to_image.yaml")
    unet.write_text(json.dumps({**json.loads(good), "in_channels": "four"}))
    err = user_error(["validate", wf, *args[1:]], capsys)
    assert f"{unet}: 'in_channels' must be a whole number, got \"four\"" in err
    unet.write_text(json.dumps({**json.loads(good), "layers_per_block": "two"}))
    err = user_error(["run", wf, *args[1:], "--set", "steps=2", "--set", "prior_steps=2",
                      "--set", "width=64", "--set", "height=64", "--no-cache",
                      "--out", tmp_path / "o"], capsys)
    assert f"{unet}: the config does not build a UNet2DConditionModel (" in err, err


# --- 5, 6. Ctrl-C and SIGTERM ---------------------------------------------------------------------

SLOW_VALIDATE = (
    "import sys, time\n"
    "from unclip_nodes.graph import cli\n"
    "def slow(*a, **k):\n"
    "    print('validating', file=sys.stderr, flush=True)\n"
    "    time.sleep(60)\n"
    "cli.load_source = slow\n"
    "sys.exit(cli.main(sys.argv[1:]))\n")


def start(code: str, args: list, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=tmp_path,
                            env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "never got ready"
        time.sleep(0.05)


def test_ctrl_c_while_validating_ends_quietly_with_130(tmp_path):
    proc = start(SLOW_VALIDATE, ["validate", "text_to_image"], tmp_path)
    line = proc.stderr.readline()
    assert line.strip() == "validating", line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted" and "Traceback" not in err


def test_ctrl_c_while_the_command_starts_ends_quietly_with_130(tmp_path):
    """What the ``unclip`` script runs (``unclip_nodes.__main__:main``)."""
    proc = start("import sys; from unclip_nodes.__main__ import main; sys.exit(main())",
                 ["validate", "text_to_image"], tmp_path)
    time.sleep(0.3)  # importing torch and the pack
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 130


def test_sigterm_stops_a_run_like_ctrl_c_with_summary_report_and_143(tmp_path, capsys):
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    proc = start("import sys; from unclip_nodes.graph.cli import main; sys.exit(main())",
                 ["run", "text_to_image", "--set", "steps=1000", "--cache-dir", cache,
                  "--report", report, "--out", tmp_path / "out"], tmp_path)
    wait_for(proc, lambda: cache.is_dir() and any(cache.rglob("*.safetensors")))
    proc.send_signal(signal.SIGTERM)  # the text is encoded (and cached); the prior runs
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "terminated: stopping after the current step" in err
    assert "interrupted: finished nodes are cached" in err
    doc = json.loads(report.read_text())
    status = {n["node"]: n["status"] for n in doc["nodes"]}
    assert doc["status"] == "interrupted"
    assert status["text"] == "ran" and status["prior"] == "interrupted", status
    assert status["save"] == "not run"
    assert "prior" in out and "interrupted" in out  # the summary table
    code, out, err = run(["run", "text_to_image", "--set", "steps=2", "--set", "upsample_steps=2",
                          "--cache-dir", cache, "--report", report, "--out", tmp_path / "out"],
                         capsys)
    assert code == 0, err
    status = {n["node"]: n["status"] for n in json.loads(report.read_text())["nodes"]}
    assert status["text"] == "disk hit"  # what finished before SIGTERM was kept


# --- 7. YAML syntax errors: where the unclosed quote or bracket began ---------------------------

def long_workflow(tmp_path: Path, line5: str) -> Path:
    lines = ["description: test", "inputs:", "  seed: {type: INT, default: 0}", "nodes:", line5]
    lines += [f"  n{i}: {{type: LoadImage, params: {{image: x.png}}}}" for i in range(25)]
    path = tmp_path / "wf.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unclosed_quote_is_placed_where_it_began(tmp_path):
    path = long_workflow(tmp_path, '  text: {type: CLIPTextEncode, params: {text: "a red '
                                   'circle}}')
    with pytest.raises(UserError) as e:
        load(path)
    assert (e.value.file, e.value.line, e.value.column) == (str(path), 5, 47)
    assert e.value.message == ("YAML syntax error: unclosed quote started here (the parser "
                               "noticed at the end of the file, line 31: found unexpected end "
                               "of stream)")
    block = long_workflow(tmp_path, "  text:\n    type: CLIPTextEncode\n    params:\n"
                                    "      prompt: 'a red circle")
    with pytest.raises(UserError) as e:
        load(block)
    assert (e.value.line, e.value.column) == (8, 15) and "unclosed quote" in e.value.message


def test_unclosed_brackets_are_placed_where_they_began(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("nodes: [1, 2,\n" + "  3,\n" * 27 + "  4\n")
    with pytest.raises(UserError) as e:
        load(path)
    assert (e.value.line, e.value.column) == (1, 8)
    assert e.value.message.startswith("YAML syntax error: unclosed '[' started here (the "
                                      "parser noticed at the end of the file, line 30:")
    mapping = long_workflow(tmp_path, "  a: {type: LoadImage, params: {image: x.png}")
    with pytest.raises(UserError) as e:
        load(mapping)
    assert (e.value.line, e.value.column) == (6, 3)  # where the parser noticed: a ',' or '}'
    assert "in the '{' that began at line 5, column 6: is it closed" in e.value.message
