"""segapp_small draws a box prompt as a dense prompt too (PromptEncoder box_mask_prompt)."""
import torch

from segapp.modeling.prompt_encoder import BOX_MASK_LOGIT, PromptEncoder


def encoder(flag: bool) -> PromptEncoder:
    torch.manual_seed(0)
    return PromptEncoder(embed_dim=32, image_size=256, box_mask_prompt=flag).eval()


def test_box_is_drawn_on_the_cells_it_overlaps():
    pe = encoder(True)  # mask input 64 x 64 cells of 4 px
    points = torch.tensor([[[10.0, 20.0], [100.0, 61.0]]])
    labels = torch.tensor([[2, 3]])
    drawn, has_box = pe.draw_boxes((points, labels), None)
    assert drawn.shape == (1, 1, 64, 64) and has_box.tolist() == [True]
    inside = drawn[0, 0] > 0
    rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
    # x 10..100 covers cells 2..24 (cell 25 starts at 100), y 20..61 cells 5..15
    assert (cols.min().item(), cols.max().item()) == (2, 24)
    assert (rows.min().item(), rows.max().item()) == (5, 15)
    assert int(inside.sum()) == 23 * 11
    assert set(drawn.unique().tolist()) == {-BOX_MASK_LOGIT, BOX_MASK_LOGIT}


def test_a_box_smaller_than_a_cell_still_marks_one_cell():
    drawn, _ = encoder(True).draw_boxes(None, torch.tensor([[41.0, 41.0, 42.0, 42.0]]))
    assert int((drawn > 0).sum()) == 1 and bool(drawn[0, 0, 10, 10] > 0)


def test_dense_embedding_mixes_box_and_no_box_prompts():
    pe = encoder(True)
    points = torch.tensor([[[10.0, 20.0], [100.0, 60.0]], [[50.0, 50.0], [0.0, 0.0]]])
    labels = torch.tensor([[2, 3], [1, -1]])
    _, dense = pe((points, labels), None, None)
    no_mask = pe.no_mask_embed.weight.reshape(-1, 1, 1).expand(-1, 16, 16)
    assert torch.equal(dense[1], no_mask)  # a click alone: the learned "no mask" embedding
    drawn, _ = pe.draw_boxes((points[:1], labels[:1]), None)
    assert torch.allclose(dense[0], pe.mask_downscaling(drawn)[0])


def test_a_given_mask_wins_and_the_flag_is_off_by_default():
    points = torch.tensor([[[10.0, 20.0], [100.0, 60.0]]])
    labels = torch.tensor([[2, 3]])
    on, off = encoder(True), encoder(False)
    mask = torch.randn(1, 1, 64, 64)
    assert torch.equal(on((points, labels), None, mask)[1], on.mask_downscaling(mask))
    assert PromptEncoder(embed_dim=32, image_size=256).box_mask_prompt is False
    _, dense = off((points, labels), None, None)
    assert torch.equal(dense[0], off.no_mask_embed.weight.reshape(-1, 1, 1).expand(-1, 16, 16))
