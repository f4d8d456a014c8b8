"""Image nodes: loading, saving (numbering, prefix safety, metadata), resize, batch, grid, animation."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from unclip_nodes.nodes import NODE_CLASS_MAPPINGS, REGISTRY, image as im, runtime
from unclip_nodes.nodes.errors import UserError

LOAD = REGISTRY["LoadImage"]
SAVE = REGISTRY["SaveImage"]
ANIM = REGISTRY["SaveAnimation"]


@pytest.fixture
def host(tmp_path):
    h = runtime.Host(output_dir=tmp_path / "out",
                     metadata={"unclip_workflow": "nodes: {a: 1}",
                               "unclip_inputs": json.dumps({"seed": 3}),
                               "note": "caf\u00e9 \u2603"})
    with runtime.use_host(h):
        yield h


def rgba_pixels(h=5, w=7, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    arr[0, 0, 3], arr[0, 1, 3] = 0, 255  # fully transparent and fully opaque pixels
    return arr


def assert_loaded_exactly(image, mask, arr):
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    assert image.shape == (1, arr.shape[0], arr.shape[1], 3)
    assert mask.shape == (1, arr.shape[0], arr.shape[1])
    assert torch.equal((image[0] * 255).round().to(torch.uint8), torch.from_numpy(arr[..., :3]))
    assert torch.equal((mask[0] * 255).round().to(torch.uint8),
                       torch.from_numpy(255 - arr[..., 3]))


# --- LoadImage -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ext,opts", [("PNG", "png", {}), ("WEBP", "webp", {"lossless": True, "exact": True})])
def test_load_with_alpha_gives_rgb_and_mask_one_minus_alpha_exactly(tmp_path, fmt, ext, opts):
    arr = rgba_pixels()
    path = tmp_path / f"a.{ext}"
    Image.fromarray(arr).save(path, format=fmt, **opts)
    image, mask = LOAD.call(path=str(path))
    assert_loaded_exactly(image, mask, arr)
    assert mask[0, 0, 0] == 1.0 and mask[0, 0, 1] == 0.0


def test_load_jpeg_matches_pillow_decode_and_has_zero_mask(tmp_path):
    arr = rgba_pixels()[..., :3]
    path = tmp_path / "a.jpg"
    Image.fromarray(arr).save(path, quality=90)
    image, mask = LOAD.call(path=str(path))
    decoded = np.array(Image.open(path).convert("RGB"))
    assert torch.equal((image[0] * 255).round().to(torch.uint8), torch.from_numpy(decoded))
    assert mask.shape == (1, 5, 7) and not mask.any()


def test_load_applies_exif_orientation(tmp_path):
    arr = rgba_pixels(h=2, w=3)[..., :3]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = tmp_path / "rot.png"
    Image.fromarray(arr).save(path, exif=exif)
    image, mask = LOAD.call(path=str(path))
    expected = np.ascontiguousarray(np.rot90(arr, k=-1))
    assert image.shape == (1, 3, 2, 3) and mask.shape == (1, 3, 2)
    assert torch.equal((image[0] * 255).round().to(torch.uint8), torch.from_numpy(expected))


def test_load_palette_with_transparency_gives_mask(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255])
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    path = tmp_path / "p.png"
    img.save(path, transparency=1)
    image, mask = LOAD.call(path=str(path))
    assert mask.tolist() == [[[0.0, 1.0]]]
    assert image[0, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_load_16_bit_grey_keeps_precision(tmp_path):
    arr = np.array([[0, 257, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    image, _ = LOAD.call(path=str(path))
    assert image.shape == (1, 1, 3, 3)
    assert torch.allclose(image[0, 0, :, 0], torch.tensor([0.0, 257 / 65535, 1.0]))


def test_missing_file_is_a_user_error_on_path_from_fingerprint_and_function(tmp_path):
    missing = str(tmp_path / "nope.png")
    for call in (lambda: LOAD.fingerprint({"image": missing}), lambda: LOAD.call(path=missing)):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.field == "image" and "nope.png" in e.value.message


@pytest.mark.parametrize("content", [b"this is not an image", b""])
def test_unreadable_file_is_a_user_error_on_path(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    for call in (lambda: LOAD.fingerprint({"image": str(path)}), lambda: LOAD.call(path=str(path))):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.field == "image"


def test_truncated_image_is_a_user_error_when_decoding(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(rgba_pixels(h=64, w=64)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError) as e:
        LOAD.call(path=str(path))
    assert e.value.field == "image"


def test_directory_and_empty_path_are_user_errors(tmp_path):
    for bad in (str(tmp_path), "", "   "):
        with pytest.raises(UserError) as e:
            LOAD.fingerprint({"image": bad})
        assert e.value.field == "image"


def test_fingerprint_follows_file_content_and_resolves_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.png"
    Image.fromarray(rgba_pixels()).save(path)
    first = LOAD.fingerprint({"image": "x.png"})
    assert first["path"] == str(path.resolve())
    assert LOAD.fingerprint({"image": str(path)}) == first
    Image.fromarray(rgba_pixels(seed=1)).save(path)
    assert LOAD.fingerprint({"image": "x.png"})["sha256"] != first["sha256"]
    image, _ = LOAD.call(path="x.png")
    assert image.shape == (1, 5, 7, 3)


# --- SaveImage -----------------------------------------------------------------------------------

def test_save_then_load_round_trips_8_bit_pixels(host, tmp_path):
    arr = rgba_pixels()
    src = tmp_path / "src.png"
    Image.fromarray(arr).save(src)
    image, _ = LOAD.call(path=str(src))
    (paths,) = SAVE.call(images=image, prefix="rt")
    again, mask = LOAD.call(path=paths)
    assert torch.equal(again, image)
    assert not mask.any()


def test_save_writes_numbered_pngs_and_returns_their_paths(host):
    images = torch.rand(2, 4, 6, 3)
    (paths,) = SAVE.call(images=images, prefix="cat")
    out = host.output_dir
    assert paths.split("\n") == [str(out / "cat_00001_.png"), str(out / "cat_00002_.png")]
    (more,) = SAVE.call(images=images[:1], prefix="cat")
    assert more == str(out / "cat_00003_.png")
    assert sorted(os.listdir(out)) == ["cat_00001_.png", "cat_00002_.png", "cat_00003_.png"]
    with Image.open(out / "cat_00002_.png") as img:
        assert img.size == (6, 4)
        assert np.array_equal(np.asarray(img), im.to_uint8(images[1]))


def test_save_numbering_continues_after_the_highest_and_never_overwrites(host, monkeypatch):
    out = host.output_dir
    out.mkdir(parents=True)
    (out / "cat_00007_.webp").write_bytes(b"other saver")
    SAVE.call(images=torch.rand(1, 2, 2, 3), prefix="cat")
    assert sorted(os.listdir(out)) == ["cat_00007_.webp", "cat_00008_.png"]
    # even if the scan were stale (a file appearing meanwhile), taken names are skipped
    (out / "cat_00008_.png").write_bytes(b"keep me")
    monkeypatch.setattr(im, "_next_number", lambda folder, stem: 8)
    (paths,) = SAVE.call(images=torch.rand(2, 2, 2, 3), prefix="cat")
    assert (out / "cat_00008_.png").read_bytes() == b"keep me"
    assert paths.split("\n") == [str(out / "cat_00009_.png"), str(out / "cat_00010_.png")]


def test_save_into_subfolders_reports_ui_entries(host):
    SAVE.call(images=torch.rand(1, 2, 2, 3), prefix="runs/a\\b")
    assert (host.output_dir / "runs" / "a" / "b_00001_.png").exists()
    assert host.ui["images"] == [{"filename": "b_00001_.png", "subfolder": "runs/a",
                                  "type": "output"}]


@pytest.mark.parametrize("prefix", ["../x", "/abs", "a/../../x", "a\\..\\..\\x", "..", "C:\\x",
                                    "~/x", "", "a/", "a/.", "two\nlines"])
def test_prefix_that_escapes_or_names_no_file_is_rejected(host, tmp_path, prefix):
    with pytest.raises(UserError) as e:
        SAVE.check({"filename_prefix": prefix})
    assert e.value.field == "filename_prefix"
    with pytest.raises(UserError) as e:
        SAVE.call(images=torch.rand(1, 2, 2, 3), prefix=prefix)
    assert e.value.field == "filename_prefix"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_prefix_through_a_symlink_out_of_the_output_folder_is_rejected(host, tmp_path):
    host.output_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (host.output_dir / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError) as e:
        SAVE.call(images=torch.rand(1, 2, 2, 3), prefix="link/x")
    assert e.value.field == "filename_prefix"
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_saved_png_carries_the_host_metadata_as_text_chunks(host):
    (path,) = SAVE.call(images=torch.rand(1, 2, 2, 3), prefix="meta")
    with Image.open(path) as img:
        assert img.text == host.metadata


def test_failed_encode_leaves_no_file_behind(host):
    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        im.write_outputs("x", "png", [lambda f: f.write(b"ok"), boom])
    assert os.listdir(host.output_dir) == []


def test_comfy_class_returns_ui_and_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cls = NODE_CLASS_MAPPINGS["unCLIP SaveImage"]
    out = cls().run(images=torch.rand(1, 2, 2, 3), prefix="c")
    assert out["ui"]["images"][0]["filename"] == "c_00001_.png"
    assert out["result"] == (str((tmp_path / "output" / "c_00001_.png").resolve()),)
    assert cls.OUTPUT_NODE and cls.IS_CHANGED() != cls.IS_CHANGED()  # nan: always re-run


# --- ResizeImage ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", im.RESIZE_METHODS)
@pytest.mark.parametrize("size", [(5, 3), (16, 12)])
def test_resize_gives_exact_size_in_range_without_touching_input(method, size):
    image = torch.rand(2, 6, 8, 3)
    before = image.clone()
    (out,) = REGISTRY["ResizeImage"].call(image=image, width=size[0], height=size[1],
                                          method=method, crop="none")
    assert out.shape == (2, size[1], size[0], 3) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(image, before)
    flat = torch.full((1, 6, 8, 3), 0.25)
    (flat_out,) = REGISTRY["ResizeImage"].call(image=flat, width=size[0], height=size[1],
                                               method=method, crop="none")
    assert torch.allclose(flat_out, torch.full_like(flat_out, 0.25), atol=1e-5)


def test_resize_center_crop_keeps_the_middle():
    image = torch.arange(4, dtype=torch.float32).div(4).view(1, 1, 4, 1).expand(1, 2, 4, 3)
    (out,) = REGISTRY["ResizeImage"].call(image=image, width=2, height=2, method="nearest",
                                          crop="center")
    assert torch.equal(out, image[:, :, 1:3])


def test_resize_zero_side_keeps_aspect_and_both_zero_is_rejected():
    (out,) = REGISTRY["ResizeImage"].call(image=torch.rand(1, 6, 8, 3), width=4, height=0,
                                          method="area", crop="none")
    assert out.shape == (1, 3, 4, 3)
    with pytest.raises(UserError) as e:
        REGISTRY["ResizeImage"].check({"width": 0, "height": 0})
    assert e.value.field == "width"


def test_resize_area_halving_averages_blocks():
    image = torch.rand(1, 4, 4, 3)
    (out,) = REGISTRY["ResizeImage"].call(image=image, width=2, height=2, method="area",
                                          crop="none")
    assert torch.allclose(out[0, 0, 0], image[0, :2, :2].mean(dim=(0, 1)))


# --- ImageBatch and ImageGrid ----------------------------------------------------------------------

def test_image_batch_concatenates_and_resizes_later_inputs_to_the_first():
    a, b, c = torch.rand(2, 4, 6, 3), torch.rand(1, 4, 6, 3), torch.rand(1, 8, 12, 3)
    (out,) = REGISTRY["ImageBatch"].call(image_a=a, image_b=b, image_c=c, image_d=None)
    assert out.shape == (4, 4, 6, 3)
    assert torch.equal(out[:2], a) and torch.equal(out[2], b[0])
    assert torch.allclose(out[3], im.resize(c, 6, 4)[0])


def test_image_batch_rejects_a_channel_mismatch():
    with pytest.raises(UserError) as e:
        REGISTRY["ImageBatch"].call(image_a=torch.rand(1, 2, 2, 3), image_b=torch.rand(1, 2, 2, 4))
    assert e.value.field == "image_b"


def test_grid_layout_size_and_pixel_placement():
    images = torch.stack([torch.full((2, 3, 3), i / 10) for i in range(5)])
    (sheet,) = REGISTRY["ImageGrid"].call(images=images, columns=0, padding=1, background=1.0)
    assert sheet.shape == (1, 2 * 2 + 1, 3 * 3 + 2, 3)  # 5 images -> 3 columns, 2 rows
    for i in range(5):
        y, x = (i // 3) * 3, (i % 3) * 4
        assert torch.equal(sheet[0, y:y + 2, x:x + 3], images[i])
    assert (sheet[0, 2] == 1.0).all() and (sheet[0, :, 3] == 1.0).all()  # gaps
    assert (sheet[0, 3:, 8:] == 1.0).all()  # the empty sixth cell
    (tall,) = REGISTRY["ImageGrid"].call(images=images, columns=2, padding=0, background=0.0)
    assert tall.shape == (1, 6, 6, 3) and torch.equal(tall[0, 4:, :3], images[4])


def test_split_image_grid_undoes_image_grid_with_its_padding_and_count():
    images = torch.rand(5, 4, 3, 3)
    (sheet,) = REGISTRY["ImageGrid"].call(images=images, columns=3, padding=2, background=1.0)
    (cells,) = REGISTRY["SplitImageGrid"].call(image=sheet, columns=3, rows=2, padding=2,
                                               count=5)
    assert torch.equal(cells, images)
    (every,) = REGISTRY["SplitImageGrid"].call(image=torch.cat([sheet, sheet]), columns=3,
                                               rows=2, padding=2, count=0)
    assert every.shape == (12, 4, 3, 3)  # both sheets, empty cells included
    assert torch.equal(every[6:11], images) and bool((every[5] == 1.0).all())


def test_split_image_grid_rejects_sizes_that_do_not_divide_and_too_many_cells():
    sheet = torch.rand(1, 10, 11, 3)
    with pytest.raises(UserError, match=r"11 px wide does not split into 2 cells") as e:
        REGISTRY["SplitImageGrid"].call(image=sheet, columns=2, rows=2)
    assert e.value.field == "columns"
    with pytest.raises(UserError, match=r"10 px high does not split into 3 cells") as e:
        REGISTRY["SplitImageGrid"].call(image=sheet, columns=1, rows=3)
    assert e.value.field == "rows"
    with pytest.raises(UserError, match="count 5 is more than the sheet's 4 cells") as e:
        REGISTRY["SplitImageGrid"].call(image=sheet[:, :10, :10], columns=2, rows=2, count=5)
    assert e.value.field == "count"


# --- SaveAnimation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,fps,ms", [("gif", 10.0, 100), ("webp", 4.0, 250)])
def test_animation_has_every_frame_with_its_duration(host, fmt, fps, ms):
    host.metadata["frames"] = json.dumps([0.0, 0.5, 1.0])
    frames = torch.stack([torch.full((4, 4, 3), v) for v in (0.0, 0.5, 1.0)])
    (path,) = ANIM.call(images=frames, prefix="anim", format=fmt, fps=fps, loop=True)
    assert path == str(host.output_dir / f"anim_00001_.{fmt}")
    with Image.open(path) as img:
        assert img.n_frames == 3
        durations, greys = [], []
        for i in range(3):
            img.seek(i)
            greys.append(np.asarray(img.convert("RGB"))[0, 0, 0])  # loads the frame and its info
            durations.append(img.info["duration"])
        assert durations == [ms] * 3 and greys == [0, 128, 255]
        assert img.info.get("loop") == 0
        meta = img.info["comment"] if fmt == "gif" else img.getexif()[0x010E]
    assert json.loads(meta)["frames"] == "[0.0, 0.5, 1.0]"
    assert host.ui["images"][0]["filename"] == f"anim_00001_.{fmt}"


def test_gif_without_loop_plays_once(host):
    (path,) = ANIM.call(images=torch.rand(2, 3, 3, 3), prefix="once", format="gif", fps=5.0,
                        loop=False)
    with Image.open(path) as img:
        assert "loop" not in img.info


def test_animation_prefix_is_checked(host):
    with pytest.raises(UserError) as e:
        ANIM.check({"filename_prefix": "../escape"})
    assert e.value.field == "filename_prefix"


def test_saved_images_and_cache_entries_get_the_umasks_permissions(tmp_path):
    import os
    from unclip_nodes.graph.cache import write_atomic
    from unclip_nodes.nodes import runtime as rt
    old = os.umask(0o022)
    try:
        with rt.use_host(rt.Host(output_dir=tmp_path)):
            files = im.save_image(torch.zeros(1, 4, 4, 3), "perm").splitlines()
        write_atomic(tmp_path / "entry.bin", b"x")
        for f in [*files, str(tmp_path / "entry.bin")]:
            assert os.stat(f).st_mode & 0o777 == 0o644, f
    finally:
        os.umask(old)
