"""segapp.formats.label_masks: the one reader of mask files, its two rules (the benchmark rule
is also covered by tests/test_eval_video.py, the id-mask rule through VideoFolderClips)."""
import numpy as np
import pytest
from PIL import Image

from segapp.formats.label_masks import LabelMaskError, UnreadableMaskError, object_ids, read_label_mask


def _palette(path, ids):
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [128] * (256 * 3 - 9))
    image.save(path)


def test_id_masks_keep_gray_ids_and_read_255_as_void_or_one_object(tmp_path):
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 1:3], ids[3:5, 4:7], ids[0] = 3, 7, 255
    Image.fromarray(ids).save(tmp_path / "g.png")
    read = read_label_mask(tmp_path / "g.png", gray_ids=True)
    assert object_ids(read) == [3, 7] and (read[0] == 0).all()  # 255 is void beside other ids
    with pytest.raises(LabelMaskError, match=r"g\.png has values 0, 3, 7, 255"):
        read_label_mask(tmp_path / "g.png")  # the benchmark rule refuses gray ids
    single = np.zeros((6, 8), np.uint8)
    single[2:4, 2:5] = 255
    Image.fromarray(single).save(tmp_path / "s.png")
    for gray_ids in (False, True):
        np.testing.assert_array_equal(read_label_mask(tmp_path / "s.png", gray_ids=gray_ids), single // 255)
    _palette(tmp_path / "p.png", ids)
    assert object_ids(read_label_mask(tmp_path / "p.png", gray_ids=True)) == [3, 7]


def test_id_masks_refuse_colour_and_too_many_ids_and_name_the_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "c.png")
    with pytest.raises(LabelMaskError, match=r"c\.png is a RGB image"):
        read_label_mask(tmp_path / "c.png", gray_ids=True)
    big = np.zeros((4, 4), np.uint16)
    big[0, 0], big[1, 1] = 1, 300
    Image.fromarray(big).save(tmp_path / "i.png")
    with pytest.raises(LabelMaskError, match=r"i\.png has object id 300; at most 254"):
        read_label_mask(tmp_path / "i.png", gray_ids=True)


def test_a_file_that_is_not_an_image_is_unreadable_not_malformed(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    for gray_ids in (False, True):
        with pytest.raises(UnreadableMaskError, match=r"cannot read mask .*x\.png"):
            read_label_mask(tmp_path / "x.png", gray_ids=gray_ids)
