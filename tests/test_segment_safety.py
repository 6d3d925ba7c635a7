"""`segapp segment` never loses work: an output folder that could overwrite the inputs is
refused, clashing output names are resolved (or refused) before any work, symlinks are
followed, odd file names and a full or read-only disk never end a run with a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segapp.batch import inputs
from segapp.batch.outputs import read_id_png
from segapp.cli import main
from test_segment_cli import TINY, check_coco_matches_pngs, make_images, make_video, manifest


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to show that nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- 1. --out vs the inputs
@pytest.mark.parametrize("out_rel, inputs_rel, says", [
    ("same", ["same"], "the output folder {out} is the input folder {inp}"),
    ("same/seg", ["same"], "the output folder {out} is inside the input folder {inp}"),
    ("link", ["same"], "the output folder {out} is the input folder {inp}"),  # link -> same
    ("same", ["same/a.png"], "the input {inp} is inside the output folder {out}"),
    (".", ["same"], "the input {inp} is inside the output folder {out}"),
])
def test_output_folder_equal_to_or_inside_an_input_is_refused(tmp_path, monkeypatch, capsys,
                                                              out_rel, inputs_rel, says):
    monkeypatch.chdir(tmp_path)
    make_images(tmp_path / "same", ["a.png", "sub/b.png"])
    (tmp_path / "link").symlink_to(tmp_path / "same", target_is_directory=True)
    before = tree(tmp_path)
    assert main(["segment", *inputs_rel, "--out", out_rel, *TINY]) == 2
    err = capsys.readouterr().err
    assert says.format(out=out_rel, inp=inputs_rel[0]) in err
    assert tree(tmp_path) == before  # nothing written, nothing overwritten
    assert not any(p.name == ".segapp" for p in tmp_path.rglob("*"))


def test_output_folder_beside_the_inputs_is_fine(tmp_path):
    make_images(tmp_path / "photos", ["a.png"])
    assert main(["segment", str(tmp_path / "photos" / "a.png"), "--out", str(tmp_path / "photos_seg"),
                 "--points-per-side", "2", *TINY]) == 0
    assert manifest(tmp_path / "photos_seg")["a.png"]["status"] == "ok"


def test_an_earlier_runs_outputs_are_never_segmented(tmp_path, capsys, caplog):
    src = tmp_path / "in"
    make_images(src, ["a.png"])
    run = ["--points-per-side", "2", *TINY]
    # An earlier run's output folder inside the input tree (made by an older segapp) is left out.
    assert main(["segment", str(src / "a.png"), "--out", str(src / "old_seg"), *run]) == 0
    assert (src / "old_seg" / "a.png").is_file()
    assert main(["segment", str(src), "--out", str(tmp_path / "out"), *run]) == 0
    assert set(manifest(tmp_path / "out")) == {"a.png"}
    assert "leaving out" in caplog.text and "old_seg" in caplog.text
    # An output folder given as the input is refused.
    assert main(["segment", str(tmp_path / "out"), "--out", str(tmp_path / "out2"), *run]) == 2
    assert "holds the outputs of a `segapp segment` run" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------------- 2. clashing output names
def test_video_beside_a_folder_of_the_same_name_keeps_its_extension(tmp_path):
    pytest.importorskip("segapp.video.predictor", reason="the video predictor has not landed")
    src = tmp_path / "clash"
    make_video(src / "clip.mp4", frames=3)  # 80x64 frames
    make_images(src, ["clip/000000.png"], size=(40, 56))  # writes clip/000000.png too
    prompts = {"videos": {"clip.mp4": {"0": [{"id": 7, "box": [10, 15, 35, 45]}]}},
               "images": {"clip/000000.png": [{"id": 2, "box": [10, 10, 40, 35]}]}}
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"), *TINY]) == 0
    records = manifest(out)
    assert records["clip.mp4"]["outputs"] == [f"clip.mp4/{i:06d}.png" for i in range(3)]
    assert records["clip/000000.png"]["outputs"] == ["clip/000000.png"]
    assert read_id_png(out / "clip" / "000000.png").shape == (40, 56)  # the image's, not a frame's
    assert set(np.unique(read_id_png(out / "clip" / "000000.png")).tolist()) <= {0, 2}
    for i in range(3):
        assert read_id_png(out / "clip.mp4" / f"{i:06d}.png").shape == (64, 80)
    assert check_coco_matches_pngs(out) == len(json.loads((out / "coco_results.json").read_text())) > 0


def test_output_stems_rules():
    stems = inputs.output_stems
    assert stems(["a.jpg", "a.png", "b.png"], ["image"] * 3) == ["a.jpg", "a.png", "b"]
    assert stems(["clip.mp4", "clip/x.png"], ["video", "image"]) == ["clip.mp4", "clip/x"]
    assert stems(["x.png", "x.png.mp4"], ["image", "video"]) == ["x", "x.png.mp4"]
    assert stems(["clip.mp4", "clip/notes.txt"], ["video", "unsupported"]) == ["clip", "clip/notes"]
    assert stems(["coco_results.json.mp4"], ["video"]) == ["coco_results.json.mp4"]


@pytest.mark.parametrize("names, message", [
    (["a.jpg", "a.png", "a.jpg.png"], "the outputs of a.jpg and a.jpg.png would both be written to a.jpg.png"),
    (["a.jpg", "a.png/x.png"], "the outputs of a.jpg and a.png/x.png would both be written to a.png"),
])
def test_a_remaining_clash_is_refused_before_any_work(tmp_path, capsys, names, message):
    src = tmp_path / "in"
    for name in names:
        make_images(src, [name], size=(32, 32))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), *TINY]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------- 3. symlinks
def test_symlinks_are_followed_with_a_loop_guard_and_listed_in_the_manifest(tmp_path, caplog, capsys):
    src = tmp_path / "in"
    make_images(src, ["a.png"])
    make_images(tmp_path, ["outside.png", "elsewhere/e.png"], size=(48, 40))
    (src / "link.png").symlink_to(tmp_path / "outside.png")  # a file outside the input folder
    (src / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a folder outside
    (src / "loop").symlink_to(src, target_is_directory=True)  # leads back up: walked once
    (src / "broken.png").symlink_to(tmp_path / "nothing.png")
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--points-per-side", "2", *TINY]) == 1
    records = manifest(out)
    assert set(records) == {"a.png", "broken.png", "link.png", "sub/e.png"}
    assert records["a.png"]["target"] is None
    assert records["link.png"]["target"] == str(tmp_path / "outside.png")
    assert records["sub/e.png"]["target"] == str(tmp_path / "elsewhere" / "e.png")
    assert records["link.png"]["status"] == records["sub/e.png"]["status"] == "ok"
    assert read_id_png(out / "link.png").shape == (48, 40) and read_id_png(out / "sub" / "e.png").shape == (48, 40)
    assert records["broken.png"]["status"] == "failed" and "No such file" in records["broken.png"]["error"]
    assert records["broken.png"]["target"] == str(tmp_path / "nothing.png")
    assert "symlink loop" in caplog.text and str(src / "loop") in caplog.text
    assert "failed  broken.png" in capsys.readouterr().out


# ---------------------------------------------------------------------------- 4. odd file names
def test_a_file_name_that_is_not_utf8_is_segmented_and_resumed(tmp_path, capsys):
    import os
    import shutil

    src = tmp_path / "in"
    make_images(src, ["a.png"])
    good = os.fsdecode(os.fsencode(str(src)) + b"/caf\xe9.png")  # Latin-1 bytes: not UTF-8
    bad = os.fsdecode(os.fsencode(str(src)) + b"/bad\xff.jpg")
    shutil.copy(src / "a.png", good)
    Path(bad).write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    run = ["segment", str(src), "--out", str(out), "--points-per-side", "2", *TINY]
    assert main(run) == 1  # bad\xff.jpg is corrupt; the run goes on and writes its manifest
    records = manifest(out)  # json keeps the undecodable bytes as \udcNN escapes
    assert records["caf\udce9.png"]["status"] == "ok" and records["caf\udce9.png"]["outputs"] == ["caf\udce9.png"]
    assert Path(os.fsdecode(os.fsencode(str(out)) + b"/caf\xe9.png")).is_file()
    assert records["bad\udcff.jpg"]["status"] == "failed"
    assert "failed  bad\\xff.jpg" in capsys.readouterr().out  # printable, the byte shown
    assert main(run) == 1
    assert "(2 already done by an earlier run)" in capsys.readouterr().out


def test_input_keys_are_short_valid_file_names():
    item = inputs.Input(path=Path("x"), rel="d/" + "\udce9" * 300 + ".png", kind="image", stem="x")
    key = item.key
    assert len(key.encode("utf-8")) < 200
    key.encode("utf-8")  # no lone surrogates
    assert inputs.image_id("caf\udce9.png") != inputs.image_id("caf\udcea.png")


# ---------------------------------------------------------------------------- 5. full or read-only disk
def _fail_writes_after(monkeypatch, module, calls: int, number: int) -> None:
    """`module.atomic_write` succeeds `calls` times, then raises OSError(number) as a full or
    read-only filesystem does (root ignores chmod, so the error is simulated)."""
    import os

    real = module.atomic_write
    count = [0]

    def write(path, data):
        count[0] += 1
        if count[0] > calls:
            raise OSError(number, os.strerror(number), str(path))
        real(path, data)

    monkeypatch.setattr(module, "atomic_write", write)


def _error_lines(text: str) -> list[str]:
    assert "Traceback" not in text
    return [line for line in text.splitlines() if "error:" in line]


@pytest.mark.parametrize("number", [28, 30])  # ENOSPC (disk full), EROFS (remounted read-only)
def test_a_full_disk_mid_run_stops_keeps_what_is_done_and_a_rerun_continues(tmp_path, monkeypatch, capsys, number):
    import os

    from segapp.batch import writer

    src = tmp_path / "in"
    make_images(src, [f"img{i}.png" for i in range(6)], size=(32, 32))
    out = tmp_path / "out"
    run = ["segment", str(src), "--out", str(out), "--batch-size", "2", "--points-per-side", "2",
           "--format", "png,coco,overlay", *TINY]
    # img0 and img1 write a PNG and an overlay each; img2 its PNG, then its overlay fails.
    _fail_writes_after(monkeypatch, writer, calls=5, number=number)
    assert main(run) == 1
    captured = capsys.readouterr()
    [line] = _error_lines(captured.err)
    assert f"cannot write to the output folder {out}: {os.strerror(number)}" in line
    assert "the manifest lists the 2 inputs finished so far" in line and "rerun the same command" in line
    records = manifest(out)
    assert set(records) == {"img0.png", "img1.png"} and all(r["status"] == "ok" for r in records.values())
    assert sorted(p.name for p in out.glob("*.png")) == ["img0.png", "img1.png"]  # img2.png deleted
    assert not list(out.rglob("*segapp-tmp"))
    monkeypatch.undo()
    assert main(run) == 0
    assert "(2 already done by an earlier run)" in capsys.readouterr().out
    assert len(manifest(out)) == 6 and sorted(p.name for p in out.glob("*.png")) == [f"img{i}.png" for i in range(6)]


def test_a_read_only_output_folder_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from segapp.batch import outputs

    src = tmp_path / "in"
    make_images(src, ["a.png"], size=(32, 32))
    out = tmp_path / "out"
    _fail_writes_after(monkeypatch, outputs, calls=0, number=30)  # EROFS at the first write
    assert main(["segment", str(src), "--out", str(out), *TINY]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert line.endswith(f"cannot write to the output folder {out}: Read-only file system")


def test_an_output_folder_without_write_permission_is_a_one_line_error(tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders; the simulated test above covers it")
    src = tmp_path / "in"
    make_images(src, ["a.png"], size=(32, 32))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["segment", str(src), "--out", str(out), *TINY]) == 1
    finally:
        out.chmod(0o700)
    [line] = _error_lines(capsys.readouterr().err)
    assert f"cannot write to the output folder {out}: Permission denied" in line


# ---------------------------------------------------------------------------- 6. prompts files
def _coco(images=None, annotations=None, categories=None) -> dict:
    data = {"images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 96, "height": 72}],
            "annotations": annotations if annotations is not None else
            [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 35]}]}
    if categories is not None:
        data["categories"] = categories
    return data


@pytest.mark.parametrize("content, message", [
    (b'{"images": {"caf\xe9.png": [{"box": [0, 0, 9, 9]}]}}', "p.json: not UTF-8 text (byte 0xe9 at offset 16)"),
    (_coco(annotations=[{"id": 1, "image_id": 1, "category_id": "3", "bbox": [1, 1, 5, 5]}]),
     'annotations[0].category_id: COCO ids are integers, got "3"'),
    (_coco(annotations=[{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5]},
                        {"id": "2", "image_id": 1, "bbox": [1, 1, 5, 5]}]),
     'annotations[1].id: COCO ids are integers, got "2"'),
    (_coco(images=[{"id": 1, "file_name": "a.png"}, {"id": "x", "file_name": "b.png"}]),
     'images[1].id: COCO ids are integers, got "x"'),
    (_coco(categories="oops"), '"categories" must be a list of {"id": ..., "name": ...} objects, got "oops"'),
    (_coco(categories=[{"id": "1", "name": "cat"}]), 'categories[0].id: COCO ids are integers, got "1"'),
    (_coco(categories=["cat"]), 'categories[0] must be an object with an integer "id" and a "name"'),
])
def test_bad_prompts_files_exit_2_with_a_message(tmp_path, capsys, content, message):
    src = tmp_path / "in"
    make_images(src, ["a.png"])
    (tmp_path / "p.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err
    assert not out.exists()


def test_a_prompts_file_with_a_byte_order_mark_is_read(tmp_path):
    from segapp.batch import prompts

    path = tmp_path / "p.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_coco(categories=[{"id": 3, "name": "cat"}])).encode())
    loaded = prompts.load(path)
    assert loaded.categories == [{"id": 3, "name": "cat"}] and loaded.image_sizes == {"a.png": (72, 96)}
    assert loaded.images["a.png"][0].category_id == 3


def _exif_rotated(path: Path, size=(72, 96)) -> None:
    """An image stored `size` (h, w) whose EXIF orientation (6) asks viewers to turn it 90 degrees."""
    from PIL import Image

    rgb = np.full((*size, 3), 40, np.uint8)
    rgb[10:45, 50:90] = (250, 120, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, exif=exif.tobytes())


def test_coco_boxes_are_in_stored_pixels_of_exif_rotated_images(tmp_path, capsys):
    src = tmp_path / "in"
    _exif_rotated(src / "rot.jpg")  # stored 96 wide, 72 high; viewers show it 72 wide, 96 high
    _exif_rotated(src / "wrong.jpg")
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(_coco(
        images=[{"id": 5, "file_name": "rot.jpg", "width": 96, "height": 72},
                {"id": 6, "file_name": "wrong.jpg", "width": 72, "height": 96}],  # the rotated size
        annotations=[{"id": 1, "image_id": 5, "category_id": 2, "bbox": [50, 10, 40, 35]},  # x up to 90 > 72
                     {"id": 2, "image_id": 6, "category_id": 2, "bbox": [10, 10, 20, 20]}],
        categories=[{"id": 2, "name": "thing"}])))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--prompts", str(ann), *TINY]) == 1
    records = manifest(out)
    assert records["rot.jpg"]["status"] == "ok"
    assert read_id_png(out / "rot.png").shape == (72, 96)  # stored orientation, as the COCO file
    assert check_coco_matches_pngs(out, gt_file=ann) == 1  # loadRes against the file itself
    assert records["wrong.jpg"]["status"] == "failed"
    assert records["wrong.jpg"]["error"].startswith("the COCO file says this image is 72x96, it is 96x72 as stored")
    # segapp's own prompts refer to the image as viewers show it (EXIF orientation applied).
    (tmp_path / "p.json").write_text(json.dumps({"images": {"rot.jpg": [{"box": [5, 50, 40, 90]}]}}))
    out2 = tmp_path / "out2"
    assert main(["segment", str(src / "rot.jpg"), "--out", str(out2), "--prompts", str(tmp_path / "p.json"),
                 *TINY]) == 0
    assert read_id_png(out2 / "rot.png").shape == (96, 72)
